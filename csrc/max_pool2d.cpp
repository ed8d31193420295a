// max_pool2d: op schemas, argument checks and output-shape math (PyTorch's
// rules, including ceil_mode's "the last window must start inside the input
// or the left padding").
#include "max_pool2d.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "backend.h"
#include "checks.h"
#include "layout.h"
#include "pooling.h"

namespace cnnext {
namespace {

constexpr const char* kOp = "cnnext max_pool2d";

Pool2dParams make_params(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* op = kOp;
  check_compute_tensor(op, "input", input, CpuIntegers::kAll);
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": expected input of shape (N, C, H, W), got ", input.dim(),
                    "-D input of size ", input.sizes());
  TORCH_CHECK_VALUE(input.size(1) > 0 && input.size(2) > 0 && input.size(3) > 0, op,
                    ": input must have non-zero channels, height and width (only the batch may be empty), got size ",
                    input.sizes());
  check_pool_pair(op, "kernel_size", kernel_size, 1);
  check_pool_pair(op, "stride", stride, 1);
  check_pool_pair(op, "padding", padding, 0);
  check_pool_pair(op, "dilation", dilation, 1);
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
  p.out_h = pooled_size(op, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h, ceil_mode);
  p.out_w = pooled_size(op, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w, ceil_mode);
  TORCH_CHECK_VALUE(p.out_h >= 1 && p.out_w >= 1, op, ": input of size ", input.sizes(), " with kernel_size=",
                    kernel_size, ", stride=", stride, ", padding=", padding, ", dilation=", dilation,
                    " gives an output of size ", p.out_h, " x ", p.out_w, ", which is too small");
  checked_numel(op, "output", {input.size(0), input.size(1), p.out_h, p.out_w}, input.element_size());
  return p;
}

// The layout a backend computes in: channels_last where `layout` is and the
// CPU pools it in place, contiguous NCHW otherwise.
at::MemoryFormat compute_layout(const at::Tensor& t, at::MemoryFormat layout) {
  return t.is_cpu() && layout == at::MemoryFormat::ChannelsLast ? layout : at::MemoryFormat::Contiguous;
}

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode) {
  const Pool2dParams p = make_params(input, kernel_size, stride, padding, dilation, ceil_mode);
  const std::vector<int64_t> sizes{input.size(0), input.size(1), p.out_h, p.out_w};
  // The results take the input's layout, as torch's pooling does. The CPU pools channels_last
  // input in place; otherwise backends compute contiguous NCHW.
  const at::MemoryFormat layout = input.suggest_memory_format(), compute = compute_layout(input, layout);
  at::Tensor output = at::empty(sizes, input.options().memory_format(compute));
  at::Tensor indices = at::empty(sizes, input.options().dtype(at::kLong).memory_format(compute));
  if (output.numel() != 0) {
    const at::Tensor x = contiguous_as(input, compute);
    CNNEXT_BACKEND_CALL(input, max_pool2d_forward, p, x, output, indices);
  }
  return {contiguous_as(output, layout), contiguous_as(indices, layout)};
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
  // The indices carry the forward input's layout (see max_pool2d); the gradient takes it too.
  const at::MemoryFormat layout = indices.suggest_memory_format(), compute = compute_layout(grad_output, layout);
  at::Tensor grad_input = at::empty(input_size, grad_output.options().memory_format(compute));
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor gy = contiguous_as(grad_output, compute);
  const at::Tensor idx = contiguous_as(indices, compute);
  const bool inside = CNNEXT_BACKEND_CALL(grad_output, max_pool2d_backward, p, gy, idx, grad_input);
  TORCH_CHECK_VALUE(inside, op, ": indices must lie in [0, H*W) = [0, ", p.in_plane(),
                    ") for input_size ", input_size, "; got an index outside the input plane");
  return contiguous_as(grad_input, layout);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cnnext, m) {
  m.def(
      "max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool ceil_mode) -> (Tensor, Tensor)");
  m.def("max_pool2d_backward(Tensor grad_output, Tensor indices, SymInt[4] input_size) -> Tensor");
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
