// Argument checks shared by every op. Each message names the op and the
// argument, so an error raised deep in a model still says what was wrong.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "params.h"

namespace cnnext {

// The integer dtypes an op computes in on the CPU besides the floating ones: those PyTorch's own CPU
// kernel of the op accepts. PyTorch's CUDA convolution and pooling kernels take floating types only,
// and so do cnnext's; bool is never accepted.
enum class CpuIntegers {
  kNone,   // floating types only (adaptive_avg_pool2d, and the backward ops but avg_pool2d's)
  kAll,    // int8, uint8, int16, int32, int64 (convolution and max_pool2d forward)
  kInt64,  // int64 only (avg_pool2d and its backward)
};

// `t` must be defined, on the CPU or CUDA, and of a dtype `op` computes in there (see CpuIntegers);
// the error names the argument, its dtype and what the device accepts.
inline void check_compute_tensor(const char* op, const char* name, const at::Tensor& t, CpuIntegers cpu_integers) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " must be a tensor, got None");
  TORCH_CHECK_VALUE(t.is_cpu() || t.is_cuda(), op, ": ", name, " must be on a CPU or CUDA device, got ",
                    t.device());
  const at::ScalarType dtype = t.scalar_type();
  if (at::isFloatingType(dtype)) return;
  constexpr const char* floating = "a floating point tensor (float32, float64, float16 or bfloat16)";
  const bool integral = at::isIntegralType(dtype, /*includeBool=*/false);
  if (t.is_cuda() || cpu_integers == CpuIntegers::kNone) {
    TORCH_CHECK_TYPE(false, op, ": ", name, " must be ", floating, ", got ", dtype,
                     integral && cpu_integers != CpuIntegers::kNone ? " (integer tensors are supported on the CPU only)"
                                                                    : "");
  }
  if (cpu_integers == CpuIntegers::kAll) {
    TORCH_CHECK_TYPE(integral, op, ": ", name, " must be ", floating,
                     " or an integer tensor (int8, uint8, int16, int32 or int64), got ", dtype);
  } else {
    TORCH_CHECK_TYPE(dtype == at::kLong, op, ": ", name, " must be ", floating, " or int64, got ", dtype);
  }
}

// Floating types only, on any device.
inline void check_float_tensor(const char* op, const char* name, const at::Tensor& t) {
  check_compute_tensor(op, name, t, CpuIntegers::kNone);
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

// a + b, or a ValueError saying that `what` does not fit in int64. Geometry is
// checked with these before any size reaches an allocation or a kernel, so a
// hostile argument can never wrap around into a small, wrong size.
inline int64_t checked_add(const char* op, const char* what, int64_t a, int64_t b) {
  int64_t out = 0;
  TORCH_CHECK_VALUE(!add_overflows(a, b, &out), op, ": ", what, " overflows int64 (", a, " + ", b, ")");
  return out;
}

// a * b, or a ValueError saying that `what` does not fit in int64.
inline int64_t checked_mul(const char* op, const char* what, int64_t a, int64_t b) {
  int64_t out = 0;
  TORCH_CHECK_VALUE(!mul_overflows(a, b, &out), op, ": ", what, " overflows int64 (", a, " * ", b, ")");
  return out;
}

// The number of elements of a contiguous tensor of `sizes`, or a ValueError
// naming it when a size is negative, or when its strides (products of the
// later sizes, empty ones counting as 1, as c10 computes them) or its bytes
// do not fit in int64.
inline int64_t checked_numel(const char* op, const char* name, at::IntArrayRef sizes, int64_t element_size) {
  for (int64_t v : sizes) {
    TORCH_CHECK_VALUE(v >= 0, op, ": ", name, " must have non-negative sizes, got ", sizes);
  }
  int64_t bytes = element_size;
  bool overflows = false;
  for (size_t i = 1; i < sizes.size(); ++i) overflows |= mul_overflows(bytes, std::max<int64_t>(sizes[i], 1), &bytes);
  const bool empty = std::find(sizes.begin(), sizes.end(), 0) != sizes.end();
  if (!empty && !sizes.empty()) overflows |= mul_overflows(bytes, sizes[0], &bytes);
  TORCH_CHECK_VALUE(!overflows, op, ": ", name, " of size ", sizes, " has more elements than a tensor can hold");
  return empty ? 0 : bytes / element_size;
}

}  // namespace cnnext
