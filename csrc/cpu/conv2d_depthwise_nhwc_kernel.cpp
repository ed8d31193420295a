// Depthwise convolution (one input and one output channel per group) on
// channels_last tensors: every pixel is a row of channels and every channel
// has its own kernel, so each pass is, per tap, an elementwise multiply-add
// of rows of channels, vectorized over the channels with no transposes. The
// kernel is read tap-major, (KH*KW, C). Work is split over output rows
// (forward), input rows (grad_input, gathering from the outputs that read
// each input pixel) and BatchChunks (grad_weight's partial sums, added in
// chunk order), so the results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "conv2d_kernels.h"
#include "kernel_utils.h"

namespace cnnext {
namespace cpu {
namespace {

// The weight (C, 1, KH, KW) as (KH*KW, C).
at::Tensor taps_by_channel(const at::Tensor& weight) {
  return weight.reshape({weight.size(0), -1}).t().contiguous();
}

// acc[c] += a[c] * b[c] over a row of channels.
template <typename T>
inline void multiply_add(T* __restrict acc, const T* __restrict a, const T* __restrict b, int64_t channels) {
  for (int64_t c = 0; c < channels; ++c) acc[c] += a[c] * b[c];
}

// fn(tap, pixel) for every tap (kh * KW + kw) of output pixel (n, oh, ow)
// that lands inside the input, at input pixel (n * H + ih) * W + iw.
template <typename Fn>
inline void for_each_tap_inside(const Conv2dParams& p, int64_t n, int64_t oh, int64_t ow, const Fn& fn) {
  for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
    const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
    if (ih < 0 || ih >= p.in_h) continue;
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
      if (iw < 0 || iw >= p.in_w) continue;
      fn(kh * p.kernel_w + kw, (n * p.in_h + ih) * p.in_w + iw);
    }
  }
}

}  // namespace

void depthwise_nhwc_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, at::Tensor& output) {
  const int64_t C = p.out_channels;
  const at::Tensor w = taps_by_channel(weight);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cnnext_depthwise_nhwc_forward", [&] {
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    const scalar_t* wt = w.const_data_ptr<scalar_t>();
    const scalar_t* b = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* y = output.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, p.batch * p.out_h, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / p.out_h, oh = row % p.out_h;
        for (int64_t ow = 0; ow < p.out_w; ++ow) {
          scalar_t* acc = y + (row * p.out_w + ow) * C;
          if (b != nullptr) {
            std::copy(b, b + C, acc);
          } else {
            std::fill(acc, acc + C, scalar_t(0));
          }
          for_each_tap_inside(p, n, oh, ow, [&](int64_t tap, int64_t pixel) {
            multiply_add(acc, x + pixel * C, wt + tap * C, C);
          });
        }
      }
    });
  });
}

void depthwise_nhwc_grad_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                               at::Tensor& grad_input) {
  const int64_t C = p.out_channels;
  const at::Tensor w = taps_by_channel(weight);
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_depthwise_nhwc_grad_input", [&] {
    const scalar_t* dy = grad_output.const_data_ptr<scalar_t>();
    const scalar_t* wt = w.const_data_ptr<scalar_t>();
    scalar_t* dx = grad_input.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, p.batch * p.in_h, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / p.in_h, ih = row % p.in_h;
        for (int64_t iw = 0; iw < p.in_w; ++iw) {
          scalar_t* acc = dx + (row * p.in_w + iw) * C;
          std::fill(acc, acc + C, scalar_t(0));
          // The outputs whose window reads (ih, iw) at tap (kh, kw): oh * stride = ih + pad - kh * dilation.
          for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
            const int64_t th = ih + p.pad_top - kh * p.dilation_h;
            if (th < 0 || th % p.stride_h != 0 || th / p.stride_h >= p.out_h) continue;
            const int64_t oh = th / p.stride_h;
            for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
              const int64_t tw = iw + p.pad_left - kw * p.dilation_w;
              if (tw < 0 || tw % p.stride_w != 0 || tw / p.stride_w >= p.out_w) continue;
              const int64_t ow = tw / p.stride_w;
              multiply_add(acc, dy + ((n * p.out_h + oh) * p.out_w + ow) * C, wt + (kh * p.kernel_w + kw) * C, C);
            }
          }
        }
      }
    });
  });
}

void depthwise_nhwc_grad_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                                at::Tensor& grad_weight, at::Tensor& grad_bias) {
  const int64_t C = p.out_channels, taps = p.kernel_plane();
  const BatchChunks chunking(p.batch);
  // Per chunk: (taps, C) weight gradient, then C bias gradient.
  at::Tensor partials = at::zeros({chunking.count, taps + 1, C}, grad_output.options());
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_depthwise_nhwc_grad_weight", [&] {
    const scalar_t* dy = grad_output.const_data_ptr<scalar_t>();
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    at::parallel_for(0, chunking.count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        scalar_t* dw = partials.select(0, chunk).mutable_data_ptr<scalar_t>();
        scalar_t* db = dw + taps * C;
        for (int64_t n = chunking.begin(chunk); n < chunking.begin(chunk + 1); ++n) {
          for (int64_t oh = 0; oh < p.out_h; ++oh) {
            for (int64_t ow = 0; ow < p.out_w; ++ow) {
              const scalar_t* g = dy + ((n * p.out_h + oh) * p.out_w + ow) * C;
              for (int64_t c = 0; c < C; ++c) db[c] += g[c];
              for_each_tap_inside(p, n, oh, ow, [&](int64_t tap, int64_t pixel) {
                multiply_add(dw + tap * C, g, x + pixel * C, C);
              });
            }
          }
        }
      }
    });
  });
  const at::Tensor sums = partials.sum(0);  // chunk order, fixed by the shape
  grad_weight.view({C, taps}).copy_(sums.narrow(0, 0, taps).t());
  if (grad_bias.defined()) grad_bias.copy_(sums.select(0, taps));
}

}  // namespace cpu
}  // namespace cnnext
