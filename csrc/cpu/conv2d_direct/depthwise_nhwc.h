// Depthwise convolution (one input and one output channel per group) on
// channels_last activations: every pixel is a row of channels and every
// channel has its own kernel, so each pass is, per tap, an elementwise
// multiply-add of rows of channels, vectorized over the channels with no
// transposes. The kernel is read tap-major, (KH*KW, C). Forward and
// grad_input keep a pixel's sums for up to kNhwcDepthwiseVectors vectors of
// channels in registers over all its taps, so each output is stored once;
// layers with few channels (at most a few vectors, a 3 x 3 kernel) keep the
// whole kernel in registers too, over a row of windows, so that a tap loads
// its input alone;
// grad_weight of a 3 x 3 kernel keeps its taps' sums in registers over a
// band of output rows, border windows included (they skip their taps out of
// bounds). Windows wholly in bounds read their taps through one offset
// table, the ones at a border through a list of their in-bounds taps. Work is split
// over output rows (forward), input rows (grad_input, gathering from the
// outputs that read each input pixel) and BatchChunks (grad_weight's partial
// sums, added in chunk order), so the results do not depend on the thread
// count. Compiled per ISA (driver.h).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../../params.h"
#include "../cache_budget.h"
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

// The taps of a window wholly in bounds, for a kernel over channels_last rows `row_pixels` pixels
// wide: rows[t], where tap t's pixel row lies from the window's corner (`sign` -1: grad_input, which
// walks back from an output pixel to the windows that read it), and weights[t], tap t's weight row.
struct InBoundsWindow {
  std::vector<int64_t> rows, weights;

  InBoundsWindow(const Conv2dParams& p, int64_t row_pixels, int64_t sign)
      : rows(p.kernel_plane()), weights(p.kernel_plane()) {
    const int64_t C = p.out_channels;
    for (int64_t kh = 0; kh < p.kernel_h; ++kh)
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        const int64_t t = kh * p.kernel_w + kw;
        rows[t] = sign * (kh * p.dilation_h * row_pixels + kw * p.dilation_w) * C;
        weights[t] = t * C;
      }
  }
  RowPairs pairs() const { return {rows.data(), weights.data(), static_cast<int64_t>(rows.size())}; }
};

// Whether a window from `start` along an axis of `size`, `kernel` taps `dilation` apart, lies in bounds.
inline bool window_inside(int64_t start, int64_t kernel, int64_t dilation, int64_t size) {
  return start >= 0 && start + (kernel - 1) * dilation < size;
}

// out[c0 + c] = init[c0 + c] (0 without init) + sum_i a[rows.a_off[i] + c0 + c] * b[rows.b_off[i] + c0 + c]
// for c < kVecs vectors; kTaps: rows.count where the caller knows it (0: not known).
template <typename T, class Arch, int64_t kVecs, int64_t kTaps>
__attribute__((always_inline)) inline void sum_of_products_step(const T* a, const T* b, const RowPairs& rows,
                                                                const T* init, T* out, int64_t c0) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  const int64_t count = kTaps > 0 ? kTaps : rows.count;
  Vec<T, B> acc[kVecs] = {};
  if (init)
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kVecs; ++j) acc[j] = load_vec<B>(init + c0 + j * V);
  for (int64_t i = 0; i < count; ++i) {
    const T* x = a + rows.a_off[i] + c0;
    const T* y = b + rows.b_off[i] + c0;
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kVecs; ++j) acc[j] += load_vec<B>(x + j * V) * load_vec<B>(y + j * V);
  }
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kVecs; ++j) store_vec<T, B>(out + c0 + j * V, acc[j]);
}

// out[c] = init[c] (0 without init) + sum_i a[rows.a_off[i] + c] * b[rows.b_off[i] + c] for c < C:
// kNhwcDepthwiseVectors vectors of channels at a time, then 2, then 1, then single channels.
// kTaps: rows.count where the caller knows it (0: not known), so the loop over the rows unrolls.
template <typename T, class Arch, int64_t kTaps = 0>
void sum_of_products(const T* a, const T* b, const RowPairs& rows, const T* init, T* out, int64_t C) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>;
  int64_t c = 0;
  for (; c + kNhwcDepthwiseVectors * V <= C; c += kNhwcDepthwiseVectors * V)
    sum_of_products_step<T, Arch, kNhwcDepthwiseVectors, kTaps>(a, b, rows, init, out, c);
  for (; c + 2 * V <= C; c += 2 * V) sum_of_products_step<T, Arch, 2, kTaps>(a, b, rows, init, out, c);
  for (; c + V <= C; c += V) sum_of_products_step<T, Arch, 1, kTaps>(a, b, rows, init, out, c);
  for (; c < C; ++c) {
    T acc = init ? init[c] : T(0);
    for (int64_t i = 0; i < rows.count; ++i) acc += a[rows.a_off[i] + c] * b[rows.b_off[i] + c];
    out[c] = acc;
  }
}

// sum_of_products over a window wholly in bounds: unrolled over the taps of a 3 x 3 kernel.
template <typename T, class Arch>
void window_sum_of_products(const T* a, const T* b, const RowPairs& rows, const T* init, T* out, int64_t C) {
  if (rows.count == 9) return sum_of_products<T, Arch, 9>(a, b, rows, init, out, C);
  sum_of_products<T, Arch>(a, b, rows, init, out, C);
}

// The taps of the kernels whose weights stay in registers (3 x 3), and how many vectors of channels that
// takes for C channels: 0 where it does not apply (fewer channels than a vector, or more than the
// registers hold beside a window's sums: as many weights as the channel-vector families' accumulators).
constexpr int64_t kResidentTaps = 9;
template <class Arch>
constexpr int64_t max_resident_vectors() {
  return Arch::kTiles.cv_accumulators / kResidentTaps;
}
template <typename T, class Arch>
constexpr int64_t resident_vectors(int64_t taps, int64_t C) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>;
  const int64_t vectors = (C + V - 1) / V;
  return taps == kResidentTaps && C >= V && vectors <= max_resident_vectors<Arch>() ? vectors : 0;
}

// out[i * C + c] = init[c] (0 without init) + sum_t a[i * a_step + rows.a_off[t] + c] * b[rows.b_off[t] + c]
// for `count` windows i in a row and every channel c of C (kVecs vectors, the last one overlapping the one
// before where C is not a whole number of vectors: the channels they share get the same sums). The
// kernel's weights are loaded once for the row.
template <typename T, class Arch, int64_t kVecs>
void resident_weight_row(const T* a, int64_t a_step, const RowPairs& rows, const T* b, const T* init, T* out,
                         int64_t C, int64_t count) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  int64_t first[kVecs], a_off[kResidentTaps];
  Vec<T, B> w[kResidentTaps][kVecs], start[kVecs];
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kVecs; ++j) {
    first[j] = std::min(j * V, C - V);
    start[j] = init ? load_vec<B>(init + first[j]) : Vec<T, B>{};
  }
  CNNEXT_UNROLL
  for (int64_t t = 0; t < kResidentTaps; ++t) {
    a_off[t] = rows.a_off[t];
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kVecs; ++j) w[t][j] = load_vec<B>(b + rows.b_off[t] + first[j]);
  }
  for (int64_t i = 0; i < count; ++i, a += a_step, out += C) {
    Vec<T, B> acc[kVecs];
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kVecs; ++j) acc[j] = start[j];
    CNNEXT_UNROLL
    for (int64_t t = 0; t < kResidentTaps; ++t)
      CNNEXT_UNROLL
      for (int64_t j = 0; j < kVecs; ++j) acc[j] += load_vec<B>(a + a_off[t] + first[j]) * w[t][j];
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kVecs; ++j) store_vec<T, B>(out + first[j], acc[j]);
  }
}

// `count` windows wholly in bounds, side by side in a row (window i's first tap at a + i * a_step), into
// out rows of C: with the kernel in registers where resident_vectors says so, else a window at a time.
template <typename T, class Arch>
void inner_windows(const T* a, int64_t a_step, const RowPairs& rows, const T* b, const T* init, T* out, int64_t C,
                   int64_t count) {
  constexpr int64_t kMax = max_resident_vectors<Arch>();
  const int64_t vectors = resident_vectors<T, Arch>(rows.count, C);
  if constexpr (kMax > 0) {
    if (vectors > 0)
      return with_vector_count<kMax>(vectors, [&](auto n) {
        resident_weight_row<T, Arch, decltype(n)::value>(a, a_step, rows, b, init, out, C, count);
      });
  }
  for (int64_t i = 0; i < count; ++i) window_sum_of_products<T, Arch>(a + i * a_step, b, rows, init, out + i * C, C);
}

// The columns [lo, hi) of an axis of `out` windows, `stride` apart from -pad, whose `kernel` taps
// `dilation` apart lie in [0, size).
struct InnerRange {
  int64_t lo, hi;
  InnerRange(int64_t out, int64_t stride, int64_t pad, int64_t kernel, int64_t dilation, int64_t size)
      : lo(0), hi(out) {
    while (lo < hi && !window_inside(lo * stride - pad, kernel, dilation, size)) ++lo;
    while (hi > lo && !window_inside((hi - 1) * stride - pad, kernel, dilation, size)) --hi;
  }
};

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
  const InBoundsWindow window(p, p.in_w, 1);
  const RowPairs interior = window.pairs();
  const InnerRange inner(p.out_w, p.stride_w, p.pad_left, p.kernel_w, p.dilation_w, p.in_w);
  at::parallel_for(0, p.batch * p.out_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> border_a(taps), border_b(taps);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / p.out_h, oh = row % p.out_h, ih0 = oh * p.stride_h - p.pad_top;
      const auto border = [&](int64_t ow) {
        RowPairs rows{border_a.data(), border_b.data(), 0};
        for_each_tap_inside(p, n, oh, ow, [&](int64_t tap, int64_t pixel) {
          border_a[rows.count] = pixel * C;
          border_b[rows.count++] = tap * C;
        });
        sum_of_products<T, Arch>(x, wt.data(), rows, bias, y + (row * p.out_w + ow) * C, C);
      };
      const bool rows_inside = window_inside(ih0, p.kernel_h, p.dilation_h, p.in_h) && inner.hi > inner.lo;
      if (!rows_inside) {
        for (int64_t ow = 0; ow < p.out_w; ++ow) border(ow);
        continue;
      }
      for (int64_t ow = 0; ow < inner.lo; ++ow) border(ow);
      inner_windows<T, Arch>(x + ((n * p.in_h + ih0) * p.in_w + inner.lo * p.stride_w - p.pad_left) * C,
                             p.stride_w * C, interior, wt.data(), bias, y + (row * p.out_w + inner.lo) * C, C,
                             inner.hi - inner.lo);
      for (int64_t ow = inner.hi; ow < p.out_w; ++ow) border(ow);
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
  const InBoundsWindow window(p, p.out_w, -1);
  const RowPairs interior = window.pairs();
  const int64_t reach_h = (p.kernel_h - 1) * p.dilation_h, reach_w = (p.kernel_w - 1) * p.dilation_w;
  // The input columns whose taps all read outputs in bounds, at stride 1.
  const InnerRange inner(p.in_w, 1, reach_w - p.pad_left, p.kernel_w, p.dilation_w, p.out_w);
  at::parallel_for(0, p.batch * p.in_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> rows_a(taps), rows_b(taps);
    const T* no_init = nullptr;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / p.in_h, ih = row % p.in_h, oh0 = ih + p.pad_top;
      const auto border = [&](int64_t iw) {
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
      };
      const bool rows_inside = unit_stride && window_inside(oh0 - reach_h, p.kernel_h, p.dilation_h, p.out_h) &&
                               inner.hi > inner.lo;
      if (!rows_inside) {
        for (int64_t iw = 0; iw < p.in_w; ++iw) border(iw);
        continue;
      }
      for (int64_t iw = 0; iw < inner.lo; ++iw) border(iw);
      inner_windows<T, Arch>(dy + ((n * p.out_h + oh0) * p.out_w + inner.lo + p.pad_left) * C, C, interior,
                             wt.data(), no_init, dx + (row * p.in_w + inner.lo) * C, C, inner.hi - inner.lo);
      for (int64_t iw = inner.hi; iw < p.in_w; ++iw) border(iw);
    }
  });
}

// dw[t][c] += sum of g[c] * x[c] over the pixel pairs of tap t, and db[c] += sum of g[c], for
// channels [c_lo, c_hi) of samples [n_begin, n_end); dw and db in memory (rows of C).
template <typename T, class Arch>
void weight_sums_rows(const Conv2dParams& p, const T* dy, const T* x, int64_t n_begin, int64_t n_end, int64_t c_lo,
                      int64_t c_hi, T* dw, T* db) {
  const int64_t C = p.out_channels;
  for (int64_t n = n_begin; n < n_end; ++n)
    for (int64_t oh = 0; oh < p.out_h; ++oh)
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const T* g = dy + ((n * p.out_h + oh) * p.out_w + ow) * C;
        for (int64_t c = c_lo; c < c_hi; ++c) db[c] += g[c];
        for_each_tap_inside(p, n, oh, ow, [&](int64_t tap, int64_t pixel) {
          multiply_add_row<T, Arch>(dw + tap * C + c_lo, g + c_lo, x + pixel * C + c_lo, c_hi - c_lo);
        });
      }
}

// grad_weight's kernels whose taps' sums stay in registers: 3 x 3.
constexpr int64_t kRegisterTaps = 9;

// Bits of the taps (kh * KW + kw) whose kernel row lies in bounds for a window from input row ih0
// (kernels of fewer than 32 taps).
inline uint32_t taps_in_rows(const Conv2dParams& p, int64_t ih0) {
  uint32_t bits = 0;
  for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
    const int64_t ih = ih0 + kh * p.dilation_h;
    if (ih >= 0 && ih < p.in_h)
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) bits |= 1u << (kh * p.kernel_w + kw);
  }
  return bits;
}

// The same for kernel columns, one mask per output column.
inline std::vector<uint32_t> taps_in_columns(const Conv2dParams& p) {
  std::vector<uint32_t> masks(p.out_w, 0);
  for (int64_t ow = 0; ow < p.out_w; ++ow)
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
      if (iw >= 0 && iw < p.in_w)
        for (int64_t kh = 0; kh < p.kernel_h; ++kh) masks[ow] |= 1u << (kh * p.kernel_w + kw);
    }
  return masks;
}

// dw[t][c] += sum of g[c] * x[c] and db[c] += sum of g[c] for kVecs vectors of channels from c0 over
// output rows [row_begin, row_end) of the batch (row r: sample r / out_h, row r % out_h), a kernel of
// kTaps taps (`window`: their input offsets from the window's corner). The sums stay in registers
// over all the rows; a window at a border skips its taps out of bounds (`column_taps`: per output
// column, the taps whose kernel column is in bounds).
template <typename T, class Arch, int64_t kTaps, int64_t kVecs>
void weight_sums_band(const Conv2dParams& p, const T* dy, const T* x, int64_t row_begin, int64_t row_end,
                      int64_t c0, const int64_t* window, const uint32_t* column_taps, T* dw, T* db) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  static_assert(kTaps < 32, "the taps' masks are 32 bits");
  constexpr uint32_t kAll = (1u << kTaps) - 1;
  const int64_t C = p.out_channels;
  Vec<T, B> acc[kTaps][kVecs] = {}, bias[kVecs] = {};
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t n = r / p.out_h, ih0 = r % p.out_h * p.stride_h - p.pad_top;
    const uint32_t row_taps = taps_in_rows(p, ih0);
    const T* g = dy + r * p.out_w * C + c0;
    // Offsets, not pointers: a border window's corner lies outside the input.
    const int64_t row_corner = ((n * p.in_h + ih0) * p.in_w - p.pad_left) * C + c0;
    for (int64_t ow = 0; ow < p.out_w; ++ow, g += C) {
      Vec<T, B> gv[kVecs];
      CNNEXT_UNROLL
      for (int64_t j = 0; j < kVecs; ++j) {
        gv[j] = load_vec<B>(g + j * V);
        bias[j] += gv[j];
      }
      const int64_t corner = row_corner + ow * p.stride_w * C;
      const uint32_t taps = row_taps & column_taps[ow];
      if (taps == kAll) {
        CNNEXT_UNROLL
        for (int64_t t = 0; t < kTaps; ++t)
          CNNEXT_UNROLL
          for (int64_t j = 0; j < kVecs; ++j) acc[t][j] += gv[j] * load_vec<B>(x + (corner + window[t]) + j * V);
        continue;
      }
      CNNEXT_UNROLL
      for (int64_t t = 0; t < kTaps; ++t)
        if (taps >> t & 1u)
          CNNEXT_UNROLL
          for (int64_t j = 0; j < kVecs; ++j) acc[t][j] += gv[j] * load_vec<B>(x + (corner + window[t]) + j * V);
    }
  }
  CNNEXT_UNROLL
  for (int64_t t = 0; t < kTaps; ++t)
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kVecs; ++j) {
      T* d = dw + t * C + c0 + j * V;
      store_vec<T, B>(d, load_vec<B>(d) + acc[t][j]);
    }
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kVecs; ++j) store_vec<T, B>(db + c0 + j * V, load_vec<B>(db + c0 + j * V) + bias[j]);
}

// Samples [n_begin, n_end) into dw and db. Kernels of kTaps taps (3 x 3) keep their sums in
// registers, kBlock vectors of channels at a time (as many as the registers hold) and then one
// vector, over bands of output rows whose rows of grad_output and input fit kDepthwiseBandBytes,
// every channel block sweeping the band while it stays in cache; other kernels, and the channels
// past the last whole vector, add in memory.
template <typename T, class Arch>
void weight_sums(const Conv2dParams& p, const T* dy, const T* x, int64_t n_begin, int64_t n_end,
                 const int64_t* window, const uint32_t* column_taps, T* dw, T* db) {
  constexpr int64_t kTaps = kRegisterTaps, V = kLanes<T, Arch::kTiles.vec_bytes>;
  constexpr int64_t kBlock = Arch::kTiles.vec_bytes == 64 ? 2 : 1;  // 9 x 2 accumulators of AVX-512's 32 registers
  const int64_t C = p.out_channels;
  const int64_t vectors = p.kernel_plane() == kTaps ? C / V : 0;
  if (vectors > 0) {
    const int64_t row_bytes = (p.out_w + p.stride_h * p.in_w) * C * static_cast<int64_t>(sizeof(T));
    const int64_t band = std::max<int64_t>(1, kDepthwiseBandBytes / std::max<int64_t>(1, row_bytes));
    const int64_t rows_end = n_end * p.out_h;
    for (int64_t r0 = n_begin * p.out_h; r0 < rows_end; r0 += band) {
      const int64_t r1 = std::min(rows_end, r0 + band);
      int64_t v = 0;
      for (; v + kBlock <= vectors; v += kBlock)
        weight_sums_band<T, Arch, kTaps, kBlock>(p, dy, x, r0, r1, v * V, window, column_taps, dw, db);
      for (; v < vectors; ++v)
        weight_sums_band<T, Arch, kTaps, 1>(p, dy, x, r0, r1, v * V, window, column_taps, dw, db);
    }
  }
  if (vectors * V < C) weight_sums_rows<T, Arch>(p, dy, x, n_begin, n_end, vectors * V, C, dw, db);
}

// grad_weight, and grad_bias where it is not null.
template <typename T, class Arch>
void depthwise_nhwc_grad_weight(const Conv2dParams& p, const T* dy, const T* x, T* grad_weight, T* grad_bias) {
  const int64_t C = p.out_channels, taps = p.kernel_plane(), size = (taps + 1) * C;
  const BatchChunks chunking(p.batch);
  const InBoundsWindow window(p, p.in_w, 1);
  const std::vector<uint32_t> column_taps = taps == kRegisterTaps ? taps_in_columns(p) : std::vector<uint32_t>();
  // Per chunk: (taps, C) weight gradient, then C bias gradient.
  std::vector<T> partials(chunking.count * size, T(0));
  at::parallel_for(0, chunking.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      T* dw = partials.data() + chunk * size;
      weight_sums<T, Arch>(p, dy, x, chunking.begin(chunk), chunking.begin(chunk + 1), window.rows.data(),
                           column_taps.data(), dw, dw + taps * C);
    }
  });
  // Chunk order, fixed by the shape; then (taps, C) to the weight's (C, taps).
  T* sums = partials.data();
  for (int64_t chunk = 1; chunk < chunking.count; ++chunk) {
    const T* part = partials.data() + chunk * size;
    for (int64_t i = 0; i < size; ++i) sums[i] += part[i];
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < taps; ++t) grad_weight[c * taps + t] = sums[t * C + c];
  if (grad_bias) std::copy(sums + taps * C, sums + size, grad_bias);
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
