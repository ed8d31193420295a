// conv2d: op schemas, argument checks, output-shape math and the choice of
// algorithm. Everything a backend may assume is established here, once.
#include "conv2d.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <sstream>
#include <string>

#include "backend.h"
#include "checks.h"
#include "layout.h"
#include "cpu/conv2d_plan.h"
#include "cpu/isa.h"

namespace cnnext {
namespace {

using Pass = cpu::ConvPass;

// The algorithm `algo` names, nullopt for "auto"; anything else is a ValueError.
std::optional<ConvAlgo> explicit_algo(c10::string_view algo) {
  if (algo == "direct") return ConvAlgo::Direct;
  if (algo == "im2col") return ConvAlgo::Im2col;
  TORCH_CHECK_VALUE(algo == "auto", "cnnext conv2d: algo must be one of 'direct', 'im2col', 'auto', got '",
                    algo, "'");
  return std::nullopt;
}

// "direct" and "im2col" are taken as given; "auto" is the plan's choice
// (cpu/conv2d_plan.h: per pass, dtype and the CPU's active ISA). CUDA tensors
// follow the plan's AVX-512 rule until GPU benchmarks say otherwise.
ConvAlgo parse_algo(c10::string_view algo, const Conv2dParams& p, Pass pass, const at::Tensor& t,
                    at::MemoryFormat layout) {
  if (const std::optional<ConvAlgo> given = explicit_algo(algo)) return *given;
  const cpu::Isa isa = t.is_cpu() ? cpu::active_isa() : cpu::Isa::kAvx512;
  const cpu::CpuVendor vendor = t.is_cpu() ? cpu::detected_vendor() : cpu::CpuVendor::kIntel;
  const bool channels_last = t.is_cpu() && layout == at::MemoryFormat::ChannelsLast;
  return cpu::conv2d_plan(p, pass, t.scalar_type() == at::kDouble ? 8 : 4, isa, vendor, std::nullopt, channels_last)
      .algo;
}

// The forward algorithm for `algo` on tensors of `dtype`: integer convolution has one kernel per
// algorithm and no measured rule to choose between them, so "auto" is the direct one.
ConvAlgo forward_algo(c10::string_view algo, const Conv2dParams& p, const at::Tensor& input,
                      at::MemoryFormat layout) {
  const ConvAlgo chosen = parse_algo(algo, p, Pass::Forward, input, layout);
  return at::isIntegralType(input.scalar_type(), /*includeBool=*/false) && algo == "auto" ? ConvAlgo::Direct : chosen;
}

// Validates input/weight/geometry and resolves every shape into Conv2dParams.
// `input_sizes` and `weight_sizes` are the logical shapes (the backward ops
// receive them as lists rather than as tensors); `element_size` is the
// dtype's, for the bytes of the tensors they describe. Every sum and product
// of the geometry is checked against int64 overflow here, so the kernels may
// form any index of the output, of a window, or of the padded input
// (o*stride + k*dilation < padded size) without checking again.
Conv2dParams make_params(const char* op, at::IntArrayRef input_sizes, at::IntArrayRef weight_sizes,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                         int64_t groups, int64_t element_size) {
  TORCH_CHECK_VALUE(input_sizes.size() == 4, op, ": expected input of shape (N, C, H, W), got ",
                    input_sizes.size(), "-D input of size ", input_sizes);
  TORCH_CHECK_VALUE(weight_sizes.size() == 4, op,
                    ": expected weight of shape (out_channels, in_channels/groups, kH, kW), got ",
                    weight_sizes.size(), "-D weight of size ", weight_sizes);
  checked_numel(op, "input", input_sizes, element_size);
  checked_numel(op, "weight", weight_sizes, element_size);
  check_pair(op, "stride", stride, 1);
  check_pair(op, "dilation", dilation, 1);
  TORCH_CHECK_VALUE(padding.size() == 4, op, ": padding must hold 4 values (top, left, bottom, right), got ",
                    padding);
  for (int64_t v : padding) {
    TORCH_CHECK_VALUE(v >= 0, op, ": padding must be non-negative, got ", padding);
  }
  TORCH_CHECK_VALUE(groups > 0, op, ": groups must be a positive integer, got ", groups);

  Conv2dParams p{};
  p.batch = input_sizes[0];
  p.in_channels = input_sizes[1];
  p.in_h = input_sizes[2];
  p.in_w = input_sizes[3];
  p.out_channels = weight_sizes[0];
  p.groups = groups;
  p.kernel_h = weight_sizes[2];
  p.kernel_w = weight_sizes[3];
  p.stride_h = stride[0];
  p.stride_w = stride[1];
  p.pad_top = padding[0];
  p.pad_left = padding[1];
  p.dilation_h = dilation[0];
  p.dilation_w = dilation[1];

  TORCH_CHECK_VALUE(p.kernel_h > 0 && p.kernel_w > 0, op, ": weight must have a non-empty kernel, got weight of size ",
                    weight_sizes);
  TORCH_CHECK_VALUE(p.in_channels % groups == 0, op, ": groups=", groups,
                    " must divide the input channels (", p.in_channels, ")");
  TORCH_CHECK_VALUE(p.out_channels % groups == 0, op, ": groups=", groups,
                    " must divide the weight's out_channels (", p.out_channels, ")");
  TORCH_CHECK_VALUE(weight_sizes[1] == p.in_channels / groups, op, ": weight of size ", weight_sizes,
                    " with groups=", groups, " expects input with in_channels/groups=", weight_sizes[1],
                    " channels per group, but input of size ", input_sizes, " has ", p.in_channels, " channels");

  const int64_t padded_h = checked_add(op, "padded input height (height + padding)",
                                       checked_add(op, "padded input height (height + padding)", p.in_h, padding[0]),
                                       padding[2]);
  const int64_t padded_w = checked_add(op, "padded input width (width + padding)",
                                       checked_add(op, "padded input width (width + padding)", p.in_w, padding[1]),
                                       padding[3]);
  const int64_t span_h = checked_mul(op, "dilated kernel height (dilation * (kH - 1) + 1)", p.dilation_h,
                                     p.kernel_h - 1) + 1;
  const int64_t span_w = checked_mul(op, "dilated kernel width (dilation * (kW - 1) + 1)", p.dilation_w,
                                     p.kernel_w - 1) + 1;
  TORCH_CHECK_VALUE(padded_h >= span_h && padded_w >= span_w, op, ": kernel size (", span_h, " x ", span_w,
                    ", after dilation) can't be greater than the padded input size (", padded_h, " x ", padded_w,
                    ")");
  p.out_h = (padded_h - span_h) / p.stride_h + 1;
  p.out_w = (padded_w - span_w) / p.stride_w + 1;
  checked_numel(op, "output", {p.batch, p.out_channels, p.out_h, p.out_w}, element_size);
  return p;
}

std::vector<int64_t> output_sizes(const Conv2dParams& p) {
  return {p.batch, p.out_channels, p.out_h, p.out_w};
}

// Layout of a result computed from tensors `a` and `b`: channels_last when either is,
// as torch's convolutions decide on the CPU. Backends compute contiguous NCHW; the
// result is converted to this layout last, so a channels_last model stays channels_last.
at::MemoryFormat conv_layout(const at::Tensor& a, const at::Tensor& b) {
  const bool channels_last = a.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                             b.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// The layouts the backend computes in: contiguous NCHW, except for
// floating-point layers of a channels_last model on the CPU that have
// channels_last kernels: direct families that run in that layout
// (cpu::runs_channels_last: channel vectors, depthwise; they read the weights
// channels_last, and write grad_weight as cpu::writes_channels_last_weights
// says), and groups-1 layers that im2col runs. There the GEMMs read and write
// the channels_last output and grad_output in place, and the input, its
// gradient and the weights are channels_last too where the columns are built
// from channels_last input (cpu::nhwc_columns), NCHW otherwise (few input
// channels: a small copy).
struct ComputeLayouts {
  at::MemoryFormat input, output, weight;
};

ComputeLayouts compute_layouts(const Conv2dParams& p, Pass pass, ConvAlgo algo, at::MemoryFormat layout,
                               const at::Tensor& t) {
  constexpr at::MemoryFormat nchw = at::MemoryFormat::Contiguous, nhwc = at::MemoryFormat::ChannelsLast;
  if (layout != nhwc || !t.is_cpu() || !at::isFloatingType(t.scalar_type())) return {nchw, nchw, nchw};
  if (algo == ConvAlgo::Direct) {
    const int64_t element_size = t.scalar_type() == at::kDouble ? 8 : 4;
    const cpu::ConvPlan plan =
        cpu::conv2d_plan(p, pass, element_size, cpu::active_isa(), cpu::detected_vendor(), algo, true);
    // The weights as a channels_last model holds them, but where grad_weight's kernels write NCHW.
    const bool nhwc_weight = pass != Pass::GradWeight || cpu::writes_channels_last_weights(plan);
    if (!plan.channels_last) return {nchw, nchw, nchw};
    return {nhwc, nhwc, nhwc_weight ? nhwc : nchw};
  }
  if (p.groups != 1) return {nchw, nchw, nchw};
  return cpu::nhwc_columns(p) ? ComputeLayouts{nhwc, nhwc, nhwc} : ComputeLayouts{nchw, nhwc, nchw};
}

void check_grad_output(const char* op, const at::Tensor& grad_output, const Conv2dParams& p) {
  const auto expected = output_sizes(p);
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef(expected), op, ": grad_output must have size ",
                    at::IntArrayRef(expected), " (the convolution's output), got ", grad_output.sizes());
}

// PyTorch's CPU convolution has a dilated kernel for int64 only among the integer types, so
// cnnext rejects a dilated convolution of the others too (its kernels would compute it).
void check_integer_dilation(const char* op, const at::Tensor& input, const Conv2dParams& p) {
  const at::ScalarType dtype = input.scalar_type();
  const bool dilated = p.dilation_h > 1 || p.dilation_w > 1;
  TORCH_CHECK_TYPE(!dilated || !at::isIntegralType(dtype, /*includeBool=*/false) || dtype == at::kLong, op,
                   ": dilation > 1 takes floating point or int64 input (as PyTorch's CPU convolution), got ", dtype,
                   " input with dilation=[", p.dilation_h, ", ", p.dilation_w, "]");
}

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias_opt,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                  c10::string_view algo) {
  constexpr const char* op = "cnnext conv2d";
  // Backends call ATen (the GEMM) on tensors that may require grad; the ops' autograd formulas are
  // registered in Python (cnnext/_autograd.py), which calls these kernels below autograd.
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  // Integers as PyTorch's CPU convolution takes them; its backward (and so cnnext's) takes floating types only.
  check_compute_tensor(op, "input", input, CpuIntegers::kAll);
  check_same(op, "weight", weight, "input", input);
  const Conv2dParams p = make_params(op, input.sizes(), weight.sizes(), stride, padding, dilation, groups,
                                     input.element_size());
  check_integer_dilation(op, input, p);
  const at::MemoryFormat layout = conv_layout(input, weight);
  const ConvAlgo a = forward_algo(algo, p, input, layout);
  at::Tensor bias;
  if (bias_opt.has_value() && bias_opt->defined()) {
    bias = *bias_opt;
    check_same(op, "bias", bias, "input", input);
    TORCH_CHECK_VALUE(bias.dim() == 1 && bias.size(0) == p.out_channels, op,
                      ": bias must be 1-D with out_channels=", p.out_channels, " elements, got bias of size ",
                      bias.sizes());
    bias = bias.contiguous();
  }
  const ComputeLayouts compute = compute_layouts(p, Pass::Forward, a, layout, input);
  at::Tensor output = at::empty(output_sizes(p), input.options().memory_format(compute.output));
  if (output.numel() == 0) return contiguous_as(output, layout);
  const at::Tensor x = contiguous_as(input, compute.input);
  const at::Tensor w = contiguous_as(weight, compute.weight);
  CNNEXT_BACKEND_CALL(input, conv2d_forward, a, p, layout == at::MemoryFormat::ChannelsLast, x, w, bias, output);
  return contiguous_as(output, layout);
}

at::Tensor conv2d_grad_input(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef input_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             int64_t groups, c10::string_view algo) {
  constexpr const char* op = "cnnext conv2d_grad_input";
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_float_tensor(op, "grad_output", grad_output);
  check_same(op, "weight", weight, "grad_output", grad_output);
  const Conv2dParams p = make_params(op, input_size, weight.sizes(), stride, padding, dilation, groups,
                                     grad_output.element_size());
  const at::MemoryFormat layout = conv_layout(grad_output, weight);
  const ConvAlgo a = parse_algo(algo, p, Pass::GradInput, grad_output, layout);
  check_grad_output(op, grad_output, p);
  const ComputeLayouts compute = compute_layouts(p, Pass::GradInput, a, layout, grad_output);
  at::Tensor grad_input = at::empty(input_size, grad_output.options().memory_format(compute.input));
  if (grad_input.numel() == 0) return contiguous_as(grad_input, layout);
  if (p.out_channels == 0) return contiguous_as(grad_input.zero_(), layout);
  const at::Tensor gy = contiguous_as(grad_output, compute.output);
  const at::Tensor w = contiguous_as(weight, compute.weight);
  CNNEXT_BACKEND_CALL(grad_output, conv2d_grad_input, a, p, layout == at::MemoryFormat::ChannelsLast, gy, w,
                      grad_input);
  return contiguous_as(grad_input, layout);
}

at::Tensor conv2d_grad_weight(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef weight_size,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              int64_t groups, c10::string_view algo) {
  constexpr const char* op = "cnnext conv2d_grad_weight";
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_float_tensor(op, "grad_output", grad_output);
  check_same(op, "input", input, "grad_output", grad_output);
  const Conv2dParams p = make_params(op, input.sizes(), weight_size, stride, padding, dilation, groups,
                                     grad_output.element_size());
  const at::MemoryFormat layout = conv_layout(grad_output, input);
  const ConvAlgo a = parse_algo(algo, p, Pass::GradWeight, grad_output, layout);
  check_grad_output(op, grad_output, p);
  const ComputeLayouts compute = compute_layouts(p, Pass::GradWeight, a, layout, input);
  at::Tensor grad_weight = at::empty(weight_size, grad_output.options().memory_format(compute.weight));
  if (grad_weight.numel() == 0) return contiguous_as(grad_weight, layout);
  if (p.batch == 0) return contiguous_as(grad_weight.zero_(), layout);
  const at::Tensor gy = contiguous_as(grad_output, compute.output);
  const at::Tensor x = contiguous_as(input, compute.input);
  at::Tensor no_bias;
  CNNEXT_BACKEND_CALL(grad_output, conv2d_grad_weight, a, p, layout == at::MemoryFormat::ChannelsLast, gy, x,
                      grad_weight, no_bias);
  return contiguous_as(grad_weight, layout);
}

// grad_weight and grad_bias together: backends that can sum the bias
// gradient in grad_weight's pass over grad_output skip a second pass.
std::tuple<at::Tensor, at::Tensor> conv2d_grad_weight_bias(const at::Tensor& grad_output, const at::Tensor& input,
                                                           at::IntArrayRef weight_size, at::IntArrayRef stride,
                                                           at::IntArrayRef padding, at::IntArrayRef dilation,
                                                           int64_t groups, c10::string_view algo) {
  constexpr const char* op = "cnnext conv2d_grad_weight_bias";
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_float_tensor(op, "grad_output", grad_output);
  check_same(op, "input", input, "grad_output", grad_output);
  const Conv2dParams p = make_params(op, input.sizes(), weight_size, stride, padding, dilation, groups,
                                     grad_output.element_size());
  const at::MemoryFormat layout = conv_layout(grad_output, input);
  const ConvAlgo a = parse_algo(algo, p, Pass::GradWeight, grad_output, layout);
  check_grad_output(op, grad_output, p);
  const ComputeLayouts compute = compute_layouts(p, Pass::GradWeight, a, layout, input);
  at::Tensor grad_weight = at::empty(weight_size, grad_output.options().memory_format(compute.weight));
  at::Tensor grad_bias = at::empty({p.out_channels}, grad_output.options());
  if (p.batch == 0) return {contiguous_as(grad_weight.zero_(), layout), grad_bias.zero_()};
  if (p.out_channels == 0) return {contiguous_as(grad_weight, layout), grad_bias};
  const at::Tensor gy = contiguous_as(grad_output, compute.output);
  if (grad_weight.numel() == 0) {  // no input channels: only the bias has a gradient
    CNNEXT_BACKEND_CALL(grad_output, conv2d_grad_bias, gy, grad_bias);
    return {contiguous_as(grad_weight, layout), grad_bias};
  }
  const at::Tensor x = contiguous_as(input, compute.input);
  CNNEXT_BACKEND_CALL(grad_output, conv2d_grad_weight, a, p, layout == at::MemoryFormat::ChannelsLast, gy, x,
                      grad_weight, grad_bias);
  return {contiguous_as(grad_weight, layout), grad_bias};
}

at::Tensor conv2d_grad_bias(const at::Tensor& grad_output) {
  constexpr const char* op = "cnnext conv2d_grad_bias";
  check_float_tensor(op, "grad_output", grad_output);
  TORCH_CHECK_VALUE(grad_output.dim() == 4, op, ": expected grad_output of shape (N, C, H, W), got size ",
                    grad_output.sizes());
  at::Tensor grad_bias = at::empty({grad_output.size(1)}, grad_output.options());
  if (grad_bias.numel() == 0) return grad_bias;
  if (grad_output.numel() == 0) return grad_bias.zero_();
  const at::Tensor gy = grad_output.contiguous();
  CNNEXT_BACKEND_CALL(grad_output, conv2d_grad_bias, gy, grad_bias);
  return grad_bias;
}

// The CPU plan of one pass as "key=value" lines, for cnnext._ops.conv2d_plan (tests and benchmarks).
// `isa` empty: the active one; `vendor` empty: this CPU's; `algo` as for the ops; `channels_last`: the
// operands' layout.
std::string conv2d_plan_query(at::IntArrayRef input_size, at::IntArrayRef weight_size, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                              at::ScalarType dtype, c10::string_view pass, c10::string_view isa,
                              c10::string_view algo, bool channels_last, c10::string_view vendor) {
  constexpr const char* op = "cnnext conv2d_plan";
  TORCH_CHECK_VALUE(at::isFloatingType(dtype), op, ": dtype must be a floating dtype, got ", dtype);
  const int64_t element_size = dtype == at::kDouble ? 8 : 4;  // float16 and bfloat16 run in float32
  const Conv2dParams p = make_params(op, input_size, weight_size, stride, padding, dilation, groups,
                                     c10::elementSize(dtype));
  std::optional<Pass> which;
  for (const Pass candidate : {Pass::Forward, Pass::GradInput, Pass::GradWeight})
    if (pass == cpu::pass_name(candidate)) which = candidate;
  TORCH_CHECK_VALUE(which, op, ": pass must be one of 'forward', 'grad_input', 'grad_weight', got '", pass, "'");
  cpu::Isa target = cpu::active_isa();
  TORCH_CHECK_VALUE(isa.empty() || cpu::parse_isa(std::string(isa).c_str(), target), op,
                    ": isa must be one of 'avx512', 'avx2', 'baseline', got '", isa, "'");
  cpu::CpuVendor cpu_vendor = cpu::detected_vendor();
  TORCH_CHECK_VALUE(vendor.empty() || cpu::parse_vendor(std::string(vendor).c_str(), cpu_vendor), op,
                    ": vendor must be one of 'intel', 'amd', 'other', got '", vendor, "'");
  const cpu::ConvPlan plan =
      cpu::conv2d_plan(p, *which, element_size, target, cpu_vendor, explicit_algo(algo), channels_last);
  std::ostringstream out;
  out << "algo=" << (plan.algo == ConvAlgo::Direct ? "direct" : "im2col") << "\nfamily=" << cpu::family_name(plan.family)
      << "\nisa=" << cpu::isa_name(plan.isa) << "\nvendor=" << cpu::vendor_name(plan.vendor) << "\nvec_bytes=" << plan.tiles.vec_bytes
      << "\noc_block=" << plan.tiles.oc_block << "\npixel_vectors=" << plan.tiles.pixel_vectors
      << "\ncv_vectors=" << plan.tiles.cv_vectors << "\ncv_accumulators=" << plan.tiles.cv_accumulators
      << "\ncv_max_pixels=" << plan.tiles.cv_max_pixels << "\nchannels_last=" << (plan.channels_last ? 1 : 0)
      << "\npixel_major=" << (plan.pixel_major ? 1 : 0)
      << "\nforced=" << plan.forced;
  return out.str();
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cnnext, m) {
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, int[2] dilation, "
      "int groups, str algo) -> Tensor");
  m.def(
      "conv2d_grad_input(Tensor grad_output, Tensor weight, SymInt[4] input_size, int[2] stride, int[4] padding, "
      "int[2] dilation, int groups, str algo) -> Tensor");
  m.def(
      "conv2d_grad_weight(Tensor grad_output, Tensor input, SymInt[4] weight_size, int[2] stride, int[4] padding, "
      "int[2] dilation, int groups, str algo) -> Tensor");
  m.def("conv2d_grad_bias(Tensor grad_output) -> Tensor");
  m.def(
      "_conv2d_plan(int[] input_size, int[] weight_size, int[2] stride, int[4] padding, int[2] dilation, "
      "int groups, ScalarType dtype, str pass_, str isa, str algo, bool channels_last=False, str vendor=\"\") -> str",
      &conv2d_plan_query);
  m.def(
      "conv2d_grad_weight_bias(Tensor grad_output, Tensor input, SymInt[4] weight_size, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, str algo) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(cnnext, CPU, m) {
  m.impl("conv2d", &conv2d);
  m.impl("conv2d_grad_input", &conv2d_grad_input);
  m.impl("conv2d_grad_weight", &conv2d_grad_weight);
  m.impl("conv2d_grad_bias", &conv2d_grad_bias);
  m.impl("conv2d_grad_weight_bias", &conv2d_grad_weight_bias);
}

#ifdef CNNEXT_WITH_CUDA
TORCH_LIBRARY_IMPL(cnnext, CUDA, m) {
  m.impl("conv2d", &conv2d);
  m.impl("conv2d_grad_input", &conv2d_grad_input);
  m.impl("conv2d_grad_weight", &conv2d_grad_weight);
  m.impl("conv2d_grad_bias", &conv2d_grad_bias);
  m.impl("conv2d_grad_weight_bias", &conv2d_grad_weight_bias);
}
#endif

}  // namespace cnnext
