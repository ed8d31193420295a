// max_pool2d: op schemas, argument checks and output-shape math (PyTorch's
// rules, including ceil_mode's "the last window must start inside the input
// or the left padding").
#include "max_pool2d.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>

#include "backend.h"
#include "checks.h"

namespace cnnext {
namespace {

constexpr const char* kOp = "cnnext max_pool2d";

// PyTorch's max_pool2d keeps kernel_size, stride, padding and dilation in C
// ints and rejects larger values; cnnext rejects what PyTorch rejects. With
// them below 2^31, the window arithmetic below stays far from int64's limits
// for any input that exists; it is checked anyway, for empty batches of
// enormous planes.
constexpr int64_t kMaxPoolArg = std::numeric_limits<int32_t>::max();

void check_pool_pair(const char* name, at::IntArrayRef v, int64_t min) {
  check_pair(kOp, name, v, min);
  TORCH_CHECK_VALUE(v[0] <= kMaxPoolArg && v[1] <= kMaxPoolArg, kOp, ": ", name, " must be at most ", kMaxPoolArg,
                    " (as in PyTorch), got ", v);
}

// Output size along one dimension (PyTorch's pooling_output_shape): with
// ceil_mode the last window must start inside the input or the left padding.
int64_t pooled_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation, bool ceil_mode) {
  const int64_t span = (kernel - 1) * dilation + 1;  // < 2^62: both factors are below 2^31
  const int64_t padded = checked_add(kOp, "padded input size (input + 2 * padding)", in, 2 * pad);
  const int64_t numerator = checked_add(kOp, "padded input size (input + 2 * padding + stride - 1)", padded - span,
                                       ceil_mode ? stride - 1 : 0);
  // Floor division that stays correct for a negative numerator.
  int64_t out = (numerator >= 0 ? numerator / stride : -((-numerator + stride - 1) / stride)) + 1;
  // (out - 1) * stride overflowing means the last window starts far past in + pad.
  int64_t last_start = 0;
  if (ceil_mode && out > 1 && (c10::mul_overflows(out - 1, stride, &last_start) || last_start >= in + pad)) --out;
  return out;
}

Pool2dParams make_params(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* op = kOp;
  check_float_tensor(op, "input", input);
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": expected input of shape (N, C, H, W), got ", input.dim(),
                    "-D input of size ", input.sizes());
  TORCH_CHECK_VALUE(input.size(1) > 0 && input.size(2) > 0 && input.size(3) > 0, op,
                    ": input must have non-zero channels, height and width (only the batch may be empty), got size ",
                    input.sizes());
  check_pool_pair("kernel_size", kernel_size, 1);
  check_pool_pair("stride", stride, 1);
  check_pool_pair("padding", padding, 0);
  check_pool_pair("dilation", dilation, 1);
  TORCH_CHECK_VALUE(padding[0] <= kernel_size[0] / 2 && padding[1] <= kernel_size[1] / 2, op,
                    ": padding should be at most half of kernel_size, got padding=", padding,
                    " and kernel_size=", kernel_size);

  Pool2dParams p{};
  p.planes = input.size(0) * input.size(1);
  p.in_h = input.size(2);
  p.in_w = input.size(3);
  p.kernel_h = kernel_size[0];
  p.kernel_w = kernel_size[1];
  p.stride_h = stride[0];
  p.stride_w = stride[1];
  p.pad_h = padding[0];
  p.pad_w = padding[1];
  p.dilation_h = dilation[0];
  p.dilation_w = dilation[1];
  p.out_h = pooled_size(p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h, ceil_mode);
  p.out_w = pooled_size(p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w, ceil_mode);
  TORCH_CHECK_VALUE(p.out_h >= 1 && p.out_w >= 1, op, ": input of size ", input.sizes(), " with kernel_size=",
                    kernel_size, ", stride=", stride, ", padding=", padding, ", dilation=", dilation,
                    " gives an output of size ", p.out_h, " x ", p.out_w, ", which is too small");
  checked_numel(op, "output", {input.size(0), input.size(1), p.out_h, p.out_w}, input.element_size());
  return p;
}

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode) {
  const Pool2dParams p = make_params(input, kernel_size, stride, padding, dilation, ceil_mode);
  const std::vector<int64_t> sizes{input.size(0), input.size(1), p.out_h, p.out_w};
  at::Tensor output = at::empty(sizes, input.options());
  at::Tensor indices = at::empty(sizes, input.options().dtype(at::kLong));
  if (output.numel() == 0) return {output, indices};
  const at::Tensor x = input.contiguous();
  CNNEXT_BACKEND_CALL(input, max_pool2d_forward, p, x, output, indices);
  return {output, indices};
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices,
                               at::IntArrayRef input_size) {
  constexpr const char* op = "cnnext max_pool2d_backward";
  check_float_tensor(op, "grad_output", grad_output);
  TORCH_CHECK_VALUE(grad_output.dim() == 4, op, ": expected grad_output of shape (N, C, H, W), got size ",
                    grad_output.sizes());
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kLong, op, ": indices must be int64, got ", indices.scalar_type());
  TORCH_CHECK_VALUE(indices.device() == grad_output.device(), op, ": indices (", indices.device(),
                    ") and grad_output (", grad_output.device(), ") must be on the same device");
  TORCH_CHECK_VALUE(indices.sizes() == grad_output.sizes(), op, ": indices of size ", indices.sizes(),
                    " must match grad_output of size ", grad_output.sizes());
  TORCH_CHECK_VALUE(input_size.size() == 4 && input_size[0] == grad_output.size(0) &&
                        input_size[1] == grad_output.size(1) && input_size[2] > 0 && input_size[3] > 0,
                    op, ": input_size must be (N, C, H, W) with N, C as in grad_output ", grad_output.sizes(),
                    " and H, W > 0, got ", input_size);
  checked_numel(op, "input_size", input_size, grad_output.element_size());
  Pool2dParams p{};
  p.planes = input_size[0] * input_size[1];
  p.in_h = input_size[2];
  p.in_w = input_size[3];
  p.out_h = grad_output.size(2);
  p.out_w = grad_output.size(3);
  at::Tensor grad_input = at::empty(input_size, grad_output.options());
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor gy = grad_output.contiguous();
  const at::Tensor idx = indices.contiguous();
  const bool inside = CNNEXT_BACKEND_CALL(grad_output, max_pool2d_backward, p, gy, idx, grad_input);
  TORCH_CHECK_VALUE(inside, op, ": indices must lie in [0, H*W) = [0, ", p.in_plane(),
                    ") for input_size ", input_size, "; got an index outside the input plane");
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cnnext, m) {
  m.def(
      "max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool ceil_mode) -> (Tensor, Tensor)");
  m.def("max_pool2d_backward(Tensor grad_output, Tensor indices, int[4] input_size) -> Tensor");
}

TORCH_LIBRARY_IMPL(cnnext, CPU, m) {
  m.impl("max_pool2d", &max_pool2d);
  m.impl("max_pool2d_backward", &max_pool2d_backward);
}

#ifdef CNNEXT_WITH_CUDA
TORCH_LIBRARY_IMPL(cnnext, CUDA, m) {
  m.impl("max_pool2d", &max_pool2d);
  m.impl("max_pool2d_backward", &max_pool2d_backward);
}
#endif

}  // namespace cnnext
