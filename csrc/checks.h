// Argument checks shared by every op. Each message names the op and the
// argument, so an error raised deep in a model still says what was wrong.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace cnnext {

inline void check_float_tensor(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " must be a tensor, got None");
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a floating point tensor (float32, float64, float16 or bfloat16), got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.is_cpu() || t.is_cuda(), op, ": ", name, " must be on a CPU or CUDA device, got ",
                    t.device());
}

// `t` must share dtype and device with the already checked `ref`.
inline void check_same(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                       const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " must be a tensor, got None");
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": ", name, " (", t.scalar_type(), ") and ",
                   ref_name, " (", ref.scalar_type(), ") must have the same dtype");
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": ", name, " (", t.device(), ") and ", ref_name, " (",
                    ref.device(), ") must be on the same device");
}

// A two-element list of integers that must each be >= `min`.
inline void check_pair(const char* op, const char* name, at::IntArrayRef v, int64_t min) {
  TORCH_CHECK_VALUE(v.size() == 2, op, ": ", name, " must hold 2 values (height, width), got ", v);
  TORCH_CHECK_VALUE(v[0] >= min && v[1] >= min, op, ": ", name, " must be ",
                    min == 0 ? "non-negative" : "positive", ", got ", v);
}

}  // namespace cnnext
