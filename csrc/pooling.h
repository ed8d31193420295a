// Geometry shared by the pooling ops (max_pool2d, avg_pool2d): PyTorch's
// limits on their arguments and its output-size rule, overflow-checked.
#pragma once

#include <ATen/core/Tensor.h>

#include <limits>

#include "checks.h"

namespace cnnext {

// PyTorch's pooling keeps kernel_size, stride, padding and dilation in C ints
// and rejects larger values; cnnext rejects what PyTorch rejects. With them
// below 2^31, the window arithmetic stays far from int64's limits for any
// input that exists; pooled_size checks it anyway, for empty batches of
// enormous planes.
constexpr int64_t kMaxPoolArg = std::numeric_limits<int32_t>::max();

inline void check_pool_pair(const char* op, const char* name, at::IntArrayRef v, int64_t min) {
  check_pair(op, name, v, min);
  TORCH_CHECK_VALUE(v[0] <= kMaxPoolArg && v[1] <= kMaxPoolArg, op, ": ", name, " must be at most ", kMaxPoolArg,
                    " (as in PyTorch), got ", v);
}

// Output size along one dimension (PyTorch's pooling_output_shape): with
// ceil_mode the last window must start inside the input or the left padding.
// The arguments must have passed check_pool_pair.
inline int64_t pooled_size(const char* op, int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                           int64_t dilation, bool ceil_mode) {
  const int64_t span = (kernel - 1) * dilation + 1;  // < 2^62: both factors are below 2^31
  const int64_t padded = checked_add(op, "padded input size (input + 2 * padding)", in, 2 * pad);
  const int64_t numerator = checked_add(op, "padded input size (input + 2 * padding + stride - 1)", padded - span,
                                        ceil_mode ? stride - 1 : 0);
  // Floor division that stays correct for a negative numerator.
  int64_t out = (numerator >= 0 ? numerator / stride : -((-numerator + stride - 1) / stride)) + 1;
  // (out - 1) * stride overflowing means the last window starts far past in + pad.
  int64_t last_start = 0;
  if (ceil_mode && out > 1 && (mul_overflows(out - 1, stride, &last_start) || last_start >= in + pad)) --out;
  return out;
}

}  // namespace cnnext
