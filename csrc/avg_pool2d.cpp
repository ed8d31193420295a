// avg_pool2d and adaptive_avg_pool2d: op schemas, argument checks and the
// windows of both ops (PyTorch's rules). The two ops share their backends:
// once the windows are resolved into an AvgPool2dParams, an adaptive pool is
// an average pool whose windows follow another formula.
#include "avg_pool2d.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "backend.h"
#include "checks.h"
#include "layout.h"
#include "pooling.h"

namespace cnnext {
namespace {

// `integers`: what PyTorch's CPU kernel of the op takes (int64 for avg_pool2d, whose integer average
// truncates toward zero; none for adaptive_avg_pool2d).
void check_input(const char* op, const at::Tensor& input, CpuIntegers integers) {
  check_compute_tensor(op, "input", input, integers);
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": expected input of shape (N, C, H, W), got ", input.dim(),
                    "-D input of size ", input.sizes());
  TORCH_CHECK_VALUE(input.size(2) > 0 && input.size(3) > 0, op,
                    ": input must have non-zero height and width, got size ", input.sizes());
}

// The input size a backward op is given must be (N, C, H, W) with N and C
// those of grad_output.
void check_input_size(const char* op, const at::Tensor& grad_output, at::IntArrayRef input_size,
                      CpuIntegers integers) {
  check_compute_tensor(op, "grad_output", grad_output, integers);
  TORCH_CHECK_VALUE(grad_output.dim() == 4, op, ": expected grad_output of shape (N, C, H, W), got size ",
                    grad_output.sizes());
  TORCH_CHECK_VALUE(input_size.size() == 4 && input_size[0] == grad_output.size(0) &&
                        input_size[1] == grad_output.size(1) && input_size[2] > 0 && input_size[3] > 0,
                    op, ": input_size must be (N, C, H, W) with N, C as in grad_output ", grad_output.sizes(),
                    " and H, W > 0, got ", input_size);
}

AvgPoolAxis window_axis(const char* op, int64_t in, int64_t kernel, int64_t stride, int64_t pad, bool ceil_mode,
                        bool count_include_pad) {
  return {in, pooled_size(op, in, kernel, stride, pad, 1, ceil_mode), kernel, stride, pad, false, count_include_pad};
}

AvgPoolAxis adaptive_axis(int64_t in, int64_t out) { return {in, out, 0, 1, 0, true, false}; }

// avg_pool2d's windows for an input of (N, C) x `spatial`.
AvgPool2dParams avg_params(const char* op, int64_t planes, at::IntArrayRef spatial, at::IntArrayRef kernel_size,
                           at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                           std::optional<int64_t> divisor_override) {
  check_pool_pair(op, "kernel_size", kernel_size, 1);
  check_pool_pair(op, "stride", stride, 1);
  check_pool_pair(op, "padding", padding, 0);
  TORCH_CHECK_VALUE(padding[0] <= kernel_size[0] / 2 && padding[1] <= kernel_size[1] / 2, op,
                    ": padding should be at most half of kernel_size, got padding=", padding,
                    " and kernel_size=", kernel_size);
  TORCH_CHECK_VALUE(!divisor_override.has_value() || *divisor_override != 0, op,
                    ": divisor_override must be non-zero (or None)");
  AvgPool2dParams p{};
  p.planes = planes;
  p.h = window_axis(op, spatial[0], kernel_size[0], stride[0], padding[0], ceil_mode, count_include_pad);
  p.w = window_axis(op, spatial[1], kernel_size[1], stride[1], padding[1], ceil_mode, count_include_pad);
  p.divisor_override = divisor_override.value_or(0);
  TORCH_CHECK_VALUE(p.h.out >= 1 && p.w.out >= 1, op, ": input of height x width ", spatial,
                    " with kernel_size=", kernel_size, ", stride=", stride, ", padding=", padding,
                    " gives an output of size ", p.h.out, " x ", p.w.out, ", which is too small");
  return p;
}

AvgPool2dParams adaptive_params(const char* op, int64_t planes, at::IntArrayRef spatial,
                                at::IntArrayRef output_size) {
  TORCH_CHECK_VALUE(output_size.size() == 2, op, ": output_size must hold 2 values (height, width), got ",
                    output_size);
  TORCH_CHECK_VALUE(output_size[0] >= 0 && output_size[1] >= 0, op, ": output_size must be non-negative, got ",
                    output_size);
  AvgPool2dParams p{};
  p.planes = planes;
  p.h = adaptive_axis(spatial[0], output_size[0]);
  p.w = adaptive_axis(spatial[1], output_size[1]);
  return p;
}

// Backends compute contiguous NCHW; results take the layout of the tensor
// they come from (input, grad_output), as torch's pooling does.
at::Tensor pool_forward(const AvgPool2dParams& p, const at::Tensor& input) {
  at::Tensor output = at::empty({input.size(0), input.size(1), p.h.out, p.w.out}, input.options());
  if (output.numel() != 0) {
    const at::Tensor x = contiguous_as(input, at::MemoryFormat::Contiguous);
    CNNEXT_BACKEND_CALL(input, avg_pool2d_forward, p, x, output);
  }
  return contiguous_as(output, input.suggest_memory_format());
}

at::Tensor pool_backward(const AvgPool2dParams& p, const char* op, const at::Tensor& grad_output,
                         at::IntArrayRef input_size) {
  TORCH_CHECK_VALUE(grad_output.size(2) == p.h.out && grad_output.size(3) == p.w.out, op, ": grad_output of size ",
                    grad_output.sizes(), " does not match the pooled size ", p.h.out, " x ", p.w.out,
                    " of an input of size ", input_size);
  at::Tensor grad_input = at::empty(input_size, grad_output.options());
  if (grad_input.numel() != 0) {
    const at::Tensor gy = contiguous_as(grad_output, at::MemoryFormat::Contiguous);
    CNNEXT_BACKEND_CALL(grad_output, avg_pool2d_backward, p, gy, grad_input);
  }
  return contiguous_as(grad_input, grad_output.suggest_memory_format());
}

at::Tensor avg_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                      at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                      std::optional<int64_t> divisor_override) {
  constexpr const char* op = "cnnext avg_pool2d";
  check_input(op, input, CpuIntegers::kInt64);
  TORCH_CHECK_VALUE(input.size(1) > 0, op, ": input must have non-zero channels (only the batch may be empty), got size ",
                    input.sizes());
  const AvgPool2dParams p = avg_params(op, input.size(0) * input.size(1), input.sizes().slice(2), kernel_size,
                                       stride, padding, ceil_mode, count_include_pad, divisor_override);
  return pool_forward(p, input);
}

at::Tensor avg_pool2d_backward(const at::Tensor& grad_output, c10::SymIntArrayRef input_size,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override) {
  constexpr const char* op = "cnnext avg_pool2d_backward";
  const at::IntArrayRef size = C10_AS_INTARRAYREF_SLOW(input_size);
  check_input_size(op, grad_output, size, CpuIntegers::kInt64);
  const AvgPool2dParams p = avg_params(op, size[0] * size[1], size.slice(2), kernel_size, stride, padding, ceil_mode,
                                       count_include_pad, divisor_override);
  return pool_backward(p, op, grad_output, size);
}

at::Tensor adaptive_avg_pool2d(const at::Tensor& input, c10::SymIntArrayRef output_size) {
  constexpr const char* op = "cnnext adaptive_avg_pool2d";
  check_input(op, input, CpuIntegers::kNone);
  const AvgPool2dParams p =
      adaptive_params(op, input.size(0) * input.size(1), input.sizes().slice(2), C10_AS_INTARRAYREF_SLOW(output_size));
  return pool_forward(p, input);
}

at::Tensor adaptive_avg_pool2d_backward(const at::Tensor& grad_output, c10::SymIntArrayRef input_size) {
  constexpr const char* op = "cnnext adaptive_avg_pool2d_backward";
  const at::IntArrayRef size = C10_AS_INTARRAYREF_SLOW(input_size);
  check_input_size(op, grad_output, size, CpuIntegers::kNone);
  const AvgPool2dParams p =
      adaptive_params(op, size[0] * size[1], size.slice(2), grad_output.sizes().slice(2));
  return pool_backward(p, op, grad_output, size);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cnnext, m) {
  m.def(
      "avg_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, bool ceil_mode, "
      "bool count_include_pad, int? divisor_override) -> Tensor");
  m.def(
      "avg_pool2d_backward(Tensor grad_output, SymInt[4] input_size, int[2] kernel_size, int[2] stride, "
      "int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");
  m.def("adaptive_avg_pool2d(Tensor input, SymInt[2] output_size) -> Tensor");
  m.def("adaptive_avg_pool2d_backward(Tensor grad_output, SymInt[4] input_size) -> Tensor");
}

TORCH_LIBRARY_IMPL(cnnext, CPU, m) {
  m.impl("avg_pool2d", &avg_pool2d);
  m.impl("avg_pool2d_backward", &avg_pool2d_backward);
  m.impl("adaptive_avg_pool2d", &adaptive_avg_pool2d);
  m.impl("adaptive_avg_pool2d_backward", &adaptive_avg_pool2d_backward);
}

#ifdef CNNEXT_WITH_CUDA
TORCH_LIBRARY_IMPL(cnnext, CUDA, m) {
  m.impl("avg_pool2d", &avg_pool2d);
  m.impl("avg_pool2d_backward", &avg_pool2d_backward);
  m.impl("adaptive_avg_pool2d", &adaptive_avg_pool2d);
  m.impl("adaptive_avg_pool2d_backward", &adaptive_avg_pool2d_backward);
}
#endif

}  // namespace cnnext
