// The CPU backend of conv2d: runs what the plan (conv2d_plan.h) says for the
// algorithm conv2d.cpp resolved, with the kernels of the active ISA
// (variants.h), maps float16/bfloat16 onto float32 (so reduced precision
// accumulates in float32), sends integer tensors to their own kernels
// (conv2d_integer_kernel.cpp), and holds the bias gradient, which both
// algorithms share.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../conv2d.h"
#include "conv2d_integer.h"
#include "conv2d_kernels.h"
#include "conv2d_plan.h"
#include "isa.h"
#include "variants.h"

namespace cnnext {
namespace cpu {
namespace {

bool is_reduced(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// Runs `compute(out32, float32 args...)` for reduced-precision tensors and
// copies the float32 result into `out`; calls compute(out, args...) otherwise.
template <typename Fn, typename... Args>
void in_accumulation_type(at::Tensor& out, Fn compute, const Args&... args) {
  if (!is_reduced(out)) {
    compute(out, args...);
    return;
  }
  auto up = [](const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; };
  at::Tensor out32 = at::empty_like(out, out.options().dtype(at::kFloat));  // same strides: channels_last stays
  compute(out32, up(args)...);
  out.copy_(out32);
}

// channel_sums of a channels_last x (each pixel a row of channels): the same
// sums per sample in the accumulation type, added in double.
template <typename T>
void pixel_channel_sums(const T* x, int64_t batch, int64_t channels, int64_t plane, T* sums) {
  using acc_t = at::opmath_type<T>;
  at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> total(end - begin, 0.0);
    std::vector<acc_t> sample(end - begin);
    for (int64_t n = 0; n < batch; ++n) {
      std::fill(sample.begin(), sample.end(), acc_t(0));
      for (int64_t i = 0; i < plane; ++i) {
        const T* row = x + (n * plane + i) * channels + begin;
        for (int64_t c = 0; c < end - begin; ++c) sample[c] += static_cast<acc_t>(row[c]);
      }
      for (int64_t c = 0; c < end - begin; ++c) total[c] += sample[c];
    }
    for (int64_t c = begin; c < end; ++c) sums[c] = static_cast<T>(total[c - begin]);
  });
}

// The plan of a pass whose algorithm conv2d.cpp resolved, in a model of the given layout: the
// direct family, the ISA whose kernels run it, and whether they run on channels_last activations
// (conv2d.cpp's compute_layouts laid the tensors out by the same plan). Elements are float32 or
// float64 here (in_accumulation_type).
ConvPlan plan_for(ConvAlgo algo, const Conv2dParams& p, ConvPass pass, bool channels_last, const at::Tensor& t) {
  const ConvPlan plan =
      conv2d_plan(p, pass, t.scalar_type() == at::kDouble ? 8 : 4, active_isa(), detected_vendor(), algo, channels_last);
  if (plan.algo == ConvAlgo::Im2col) note_family_run(pass, Family::kIm2col);
  return plan;
}

// The layout the direct kernels read the weights in (variants.h), which conv2d.cpp laid out by the same plan.
void check_direct_weight_layout(const ConvPlan& plan, const at::Tensor& w) {
  const auto format = plan.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  TORCH_INTERNAL_ASSERT(w.is_contiguous(format), "cnnext: the direct kernels got weights in another layout");
}

template <typename T>
const T* optional_data(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// sums[c] = sum over n and the plane of x[n][c]. Plane sums in the accumulation type vectorize;
// adding the planes in double keeps a large batch from drifting away from PyTorch's cascade sum.
template <typename T>
void channel_sums(const T* x, int64_t batch, int64_t channels, int64_t plane, T* sums) {
  using acc_t = at::opmath_type<T>;
  at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double total = 0;
      for (int64_t n = 0; n < batch; ++n) {
        const T* src = x + (n * channels + c) * plane;
        if constexpr (std::is_same_v<T, acc_t>) {
          total += direct_kernels<T>(active_isa()).plane_sum(src, plane);
        } else {
          acc_t sum = 0;
          for (int64_t i = 0; i < plane; ++i) sum += static_cast<acc_t>(src[i]);
          total += sum;
        }
      }
      sums[c] = static_cast<T>(total);
    }
  });
}

}  // namespace

void conv2d_forward(ConvAlgo algo, const Conv2dParams& p, bool channels_last, const at::Tensor& input,
                    const at::Tensor& weight, const at::Tensor& bias, at::Tensor& output) {
  if (at::isIntegralType(input.scalar_type(), /*includeBool=*/false))
    return integer_conv2d_forward(algo, p, input, weight, bias, output);
  in_accumulation_type(
      output,
      [&](at::Tensor& y, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
        const ConvPlan plan = plan_for(algo, p, ConvPass::Forward, channels_last, x);
        if (plan.algo == ConvAlgo::Im2col && im2col_nhwc(p, x, y)) return im2col_nhwc_forward(p, x, w, b, y);
        if (plan.algo == ConvAlgo::Im2col) return im2col_forward(p, x, w, b, y);
        check_direct_weight_layout(plan, w);
        AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cnnext_direct_forward", [&] {
          direct_kernels<scalar_t>(plan.isa).forward(p, plan, x.const_data_ptr<scalar_t>(),
                                                     w.const_data_ptr<scalar_t>(), optional_data<scalar_t>(b),
                                                     y.mutable_data_ptr<scalar_t>());
        });
      },
      input, weight, bias);
}

void conv2d_grad_input(ConvAlgo algo, const Conv2dParams& p, bool channels_last, const at::Tensor& grad_output,
                       const at::Tensor& weight, at::Tensor& grad_input) {
  in_accumulation_type(
      grad_input,
      [&](at::Tensor& dx, const at::Tensor& dy, const at::Tensor& w) {
        const ConvPlan plan = plan_for(algo, p, ConvPass::GradInput, channels_last, dy);
        if (plan.algo == ConvAlgo::Im2col && im2col_nhwc(p, dy, dx)) return im2col_nhwc_grad_input(p, dy, w, dx);
        if (plan.algo == ConvAlgo::Im2col) return im2col_grad_input(p, dy, w, dx);
        check_direct_weight_layout(plan, w);
        AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "cnnext_direct_grad_input", [&] {
          direct_kernels<scalar_t>(plan.isa).grad_input(p, plan, dy.const_data_ptr<scalar_t>(),
                                                        w.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>());
        });
      },
      grad_output, weight);
}

void conv2d_grad_weight(ConvAlgo algo, const Conv2dParams& p, bool channels_last, const at::Tensor& grad_output,
                        const at::Tensor& input, at::Tensor& grad_weight, at::Tensor& grad_bias) {
  // The direct kernel and the channels_last GEMMs sum the bias gradient while they have
  // grad_output in cache (float32/64 only).
  const bool nhwc = algo == ConvAlgo::Im2col && im2col_nhwc(p, grad_output, input);
  const bool fused_bias = grad_bias.defined() && (algo == ConvAlgo::Direct || nhwc) && !is_reduced(grad_output);
  in_accumulation_type(
      grad_weight,
      [&](at::Tensor& dw, const at::Tensor& dy, const at::Tensor& x) {
        const ConvPlan plan = plan_for(algo, p, ConvPass::GradWeight, channels_last, dy);
        if (nhwc) {
          at::Tensor no_bias;
          return im2col_nhwc_grad_weight(p, dy, x, dw, fused_bias ? grad_bias : no_bias);
        }
        if (plan.algo == ConvAlgo::Im2col) return im2col_grad_weight(p, dy, x, dw);
        TORCH_INTERNAL_ASSERT(dw.is_contiguous(writes_channels_last_weights(plan) ? at::MemoryFormat::ChannelsLast
                                                                                 : at::MemoryFormat::Contiguous),
                              "cnnext: the direct kernels got a weight gradient in another layout");
        AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "cnnext_direct_grad_weight", [&] {
          direct_kernels<scalar_t>(plan.isa).grad_weight(p, plan, dy.const_data_ptr<scalar_t>(),
                                                         x.const_data_ptr<scalar_t>(), dw.mutable_data_ptr<scalar_t>(),
                                                         fused_bias ? grad_bias.mutable_data_ptr<scalar_t>() : nullptr);
        });
      },
      grad_output, input);
  if (grad_bias.defined() && !fused_bias) conv2d_grad_bias(grad_output, grad_bias);
}

void conv2d_grad_bias(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  // The im2col paths' grad_output may be channels_last.
  const bool channels_last = !grad_output.is_contiguous() &&
                             grad_output.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor gy = channels_last ? grad_output : grad_output.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "cnnext_grad_bias", [&] {
    (channels_last ? pixel_channel_sums<scalar_t> : channel_sums<scalar_t>)(
        gy.const_data_ptr<scalar_t>(), gy.size(0), gy.size(1), gy.size(2) * gy.size(3),
        grad_bias.mutable_data_ptr<scalar_t>());
  });
}

}  // namespace cpu
}  // namespace cnnext
