// Depthwise convolution (one input and one output channel per group) on
// channels_last activations: every pixel is a row of channels and every
// channel has its own kernel, so each pass is, per tap, an elementwise
// multiply-add of rows of channels, vectorized over the channels with no
// transposes. The kernel is read tap-major, (KH*KW, C). Forward and
// grad_input keep a pixel's sums for kNhwcDepthwiseVectors vectors of channels in
// registers over all its taps, so each output is stored once. Work is split
// over output rows (forward), input rows (grad_input, gathering from the
// outputs that read each input pixel) and BatchChunks (grad_weight's partial
// sums, added in chunk order), so the results do not depend on the thread
// count. Compiled per ISA (driver.h).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../../params.h"
#include "../kernel_utils.h"
#include "../vec.h"

namespace cnnext {
namespace cpu {
namespace {

// Vectors of channels whose sums a step keeps in registers.
constexpr int64_t kNhwcDepthwiseVectors = 4;

// The weight (C, 1, KH, KW) as (KH*KW, C).
template <typename T>
std::vector<T> taps_by_channel(const Conv2dParams& p, const T* weight) {
  const int64_t C = p.out_channels, taps = p.kernel_plane();
  std::vector<T> wt(taps * C);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < taps; ++t) wt[t * C + c] = weight[c * taps + t];
  return wt;
}

// The rows of channels a pixel's sum reads: a + a_off[i] times b + b_off[i] for i < count.
struct RowPairs {
  const int64_t* a_off;
  const int64_t* b_off;
  int64_t count;
};

// out[c] = init[c] (0 without init) + sum_i a[rows.a_off[i] + c] * b[rows.b_off[i] + c] for c < C.
template <typename T, class Arch>
void sum_of_products(const T* a, const T* b, const RowPairs& rows, const T* init, T* out, int64_t C) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  int64_t c = 0;
  for (; c + kNhwcDepthwiseVectors * V <= C; c += kNhwcDepthwiseVectors * V) {
    Vec<T, B> acc[kNhwcDepthwiseVectors] = {};
    if (init)
      for (int64_t j = 0; j < kNhwcDepthwiseVectors; ++j) acc[j] = load_vec<B>(init + c + j * V);
    for (int64_t i = 0; i < rows.count; ++i) {
      const T* x = a + rows.a_off[i] + c;
      const T* y = b + rows.b_off[i] + c;
      for (int64_t j = 0; j < kNhwcDepthwiseVectors; ++j) acc[j] += load_vec<B>(x + j * V) * load_vec<B>(y + j * V);
    }
    for (int64_t j = 0; j < kNhwcDepthwiseVectors; ++j) store_vec<T, B>(out + c + j * V, acc[j]);
  }
  for (; c + V <= C; c += V) {
    Vec<T, B> acc = {};
    if (init) acc = load_vec<B>(init + c);
    for (int64_t i = 0; i < rows.count; ++i) acc += load_vec<B>(a + rows.a_off[i] + c) * load_vec<B>(b + rows.b_off[i] + c);
    store_vec<T, B>(out + c, acc);
  }
  for (; c < C; ++c) {
    T acc = init ? init[c] : T(0);
    for (int64_t i = 0; i < rows.count; ++i) acc += a[rows.a_off[i] + c] * b[rows.b_off[i] + c];
    out[c] = acc;
  }
}

// acc[c] += a[c] * b[c] for c < C.
template <typename T, class Arch>
void multiply_add_row(T* acc, const T* a, const T* b, int64_t C) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  int64_t c = 0;
  for (; c + V <= C; c += V)
    store_vec<T, B>(acc + c, load_vec<B>(acc + c) + load_vec<B>(a + c) * load_vec<B>(b + c));
  for (; c < C; ++c) acc[c] += a[c] * b[c];
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

template <typename T, class Arch>
void depthwise_nhwc_forward(const Conv2dParams& p, const T* x, const T* weight, const T* bias, T* y) {
  const int64_t C = p.out_channels, taps = p.kernel_plane();
  const std::vector<T> wt = taps_by_channel(p, weight);
  // A window wholly in bounds: its taps' rows relative to its corner pixel, and the weight rows.
  std::vector<int64_t> window_a(taps), window_b(taps);
  for (int64_t kh = 0; kh < p.kernel_h; ++kh)
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      const int64_t t = kh * p.kernel_w + kw;
      window_a[t] = (kh * p.dilation_h * p.in_w + kw * p.dilation_w) * C;
      window_b[t] = t * C;
    }
  const RowPairs interior{window_a.data(), window_b.data(), taps};
  at::parallel_for(0, p.batch * p.out_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> border_a(taps), border_b(taps);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / p.out_h, oh = row % p.out_h, ih0 = oh * p.stride_h - p.pad_top;
      const bool rows_inside = ih0 >= 0 && ih0 + (p.kernel_h - 1) * p.dilation_h < p.in_h;
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const int64_t iw0 = ow * p.stride_w - p.pad_left;
        T* out = y + (row * p.out_w + ow) * C;
        if (rows_inside && iw0 >= 0 && iw0 + (p.kernel_w - 1) * p.dilation_w < p.in_w) {
          sum_of_products<T, Arch>(x + ((n * p.in_h + ih0) * p.in_w + iw0) * C, wt.data(), interior, bias, out, C);
          continue;
        }
        RowPairs rows{border_a.data(), border_b.data(), 0};
        for_each_tap_inside(p, n, oh, ow, [&](int64_t tap, int64_t pixel) {
          border_a[rows.count] = pixel * C;
          border_b[rows.count++] = tap * C;
        });
        sum_of_products<T, Arch>(x, wt.data(), rows, bias, out, C);
      }
    }
  });
}

template <typename T, class Arch>
void depthwise_nhwc_grad_input(const Conv2dParams& p, const T* dy, const T* weight, T* dx) {
  const int64_t C = p.out_channels, taps = p.kernel_plane();
  const std::vector<T> wt = taps_by_channel(p, weight);
  // At stride 1, an input pixel whose taps all read outputs in bounds (oh = ih + pad - kh * dilation):
  // the gradient rows relative to output pixel (ih + pad_top, iw + pad_left), and the weight rows.
  const bool unit_stride = p.stride_h == 1 && p.stride_w == 1;
  std::vector<int64_t> window_a(taps), window_b(taps);
  for (int64_t kh = 0; kh < p.kernel_h; ++kh)
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      const int64_t t = kh * p.kernel_w + kw;
      window_a[t] = -(kh * p.dilation_h * p.out_w + kw * p.dilation_w) * C;
      window_b[t] = t * C;
    }
  const RowPairs interior{window_a.data(), window_b.data(), taps};
  const int64_t reach_h = (p.kernel_h - 1) * p.dilation_h, reach_w = (p.kernel_w - 1) * p.dilation_w;
  at::parallel_for(0, p.batch * p.in_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> rows_a(taps), rows_b(taps);
    const T* no_init = nullptr;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / p.in_h, ih = row % p.in_h, oh0 = ih + p.pad_top;
      const bool rows_inside = unit_stride && oh0 - reach_h >= 0 && oh0 < p.out_h;
      for (int64_t iw = 0; iw < p.in_w; ++iw) {
        const int64_t ow0 = iw + p.pad_left;
        if (rows_inside && ow0 - reach_w >= 0 && ow0 < p.out_w) {
          sum_of_products<T, Arch>(dy + ((n * p.out_h + oh0) * p.out_w + ow0) * C, wt.data(), interior, no_init,
                                   dx + (row * p.in_w + iw) * C, C);
          continue;
        }
        RowPairs rows{rows_a.data(), rows_b.data(), 0};
        // The outputs whose window reads (ih, iw) at tap (kh, kw): oh * stride = ih + pad - kh * dilation.
        for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
          const int64_t th = ih + p.pad_top - kh * p.dilation_h;
          if (th < 0 || th % p.stride_h != 0 || th / p.stride_h >= p.out_h) continue;
          const int64_t oh = th / p.stride_h;
          for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
            const int64_t tw = iw + p.pad_left - kw * p.dilation_w;
            if (tw < 0 || tw % p.stride_w != 0 || tw / p.stride_w >= p.out_w) continue;
            rows_a[rows.count] = ((n * p.out_h + oh) * p.out_w + tw / p.stride_w) * C;
            rows_b[rows.count++] = (kh * p.kernel_w + kw) * C;
          }
        }
        sum_of_products<T, Arch>(dy, wt.data(), rows, no_init, dx + (row * p.in_w + iw) * C, C);
      }
    }
  });
}

// grad_weight, and grad_bias where it is not null.
template <typename T, class Arch>
void depthwise_nhwc_grad_weight(const Conv2dParams& p, const T* dy, const T* x, T* grad_weight, T* grad_bias) {
  const int64_t C = p.out_channels, taps = p.kernel_plane();
  const BatchChunks chunking(p.batch);
  // Per chunk: (taps, C) weight gradient, then C bias gradient.
  std::vector<T> partials(chunking.count * (taps + 1) * C, T(0));
  at::parallel_for(0, chunking.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      T* dw = partials.data() + chunk * (taps + 1) * C;
      T* db = dw + taps * C;
      for (int64_t n = chunking.begin(chunk); n < chunking.begin(chunk + 1); ++n) {
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          for (int64_t ow = 0; ow < p.out_w; ++ow) {
            const T* g = dy + ((n * p.out_h + oh) * p.out_w + ow) * C;
            for (int64_t c = 0; c < C; ++c) db[c] += g[c];
            for_each_tap_inside(p, n, oh, ow, [&](int64_t tap, int64_t pixel) {
              multiply_add_row<T, Arch>(dw + tap * C, g, x + pixel * C, C);
            });
          }
        }
      }
    }
  });
  // Chunk order, fixed by the shape.
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t t = 0; t <= taps; ++t) {
      T sum = 0;
      for (int64_t chunk = 0; chunk < chunking.count; ++chunk) sum += partials[(chunk * (taps + 1) + t) * C + c];
      if (t < taps) {
        grad_weight[c * taps + t] = sum;
      } else if (grad_bias) {
        grad_bias[c] = sum;
      }
    }
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
