// The pooling loops that are compiled once per ISA (pool_loops_<isa>.cpp,
// variants.h): average pooling (avg_pool2d_kernel.cpp says how), the max-pool
// loop that pools one output row at a time (max_pool2d_kernel.cpp), and the
// channels_last max pooling.
// Plain C++ that the compiler vectorizes for the ISA of the translation unit
// that includes it, after its target pragma: everything here has internal
// linkage.
#pragma once

#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../params.h"
#include "conv2d_direct/tiles.h"
#include "variants.h"
#include "vec.h"

namespace cnnext {
namespace cpu {
namespace {

// How windows of T are summed (in A) and averaged. Floating types sum in their
// opmath type and divide.
template <typename T>
struct AvgMath {
  using A = at::opmath_type<T>;
  static A divide(A sum, A divisor) { return sum / divisor; }
};

// int64 as PyTorch computes it: the sum wraps around on overflow (here in
// uint64_t, where that is defined rather than undefined behaviour, with the
// same bits), and the average is int64 division, truncating toward zero; the
// backward divides each output's gradient before summing (so it truncates per
// output). Divisors are never 0 (the op's checks), and -1 negates with wrap
// around, where INT64_MIN / -1 would trap.
template <>
struct AvgMath<int64_t> {
  using A = uint64_t;
  static A divide(A sum, A divisor) {
    const int64_t d = static_cast<int64_t>(divisor);
    return d == -1 ? A(0) - sum : static_cast<A>(static_cast<int64_t>(sum) / d);
  }
};

// The value every window's maximum starts from: -inf, or an integer type's
// lowest value (a window that holds only that value reports its first
// in-bounds element, as for -inf, which is also PyTorch's index).
template <typename A>
constexpr A lowest_value() {
  if constexpr (std::numeric_limits<A>::has_infinity) return -std::numeric_limits<A>::infinity();
  return std::numeric_limits<A>::lowest();
}

// dst[o] = sum of v over output o's window along `a` (v indexed by input position).
template <typename A, int64_t kStride>
__attribute__((always_inline)) inline void window_sums(const AvgPoolAxis& a, const A* v, A* dst) {
  if (a.adaptive) {
    for (int64_t o = 0; o < a.out; ++o) {
      A sum = 0;
      for (int64_t i = a.start(o); i < a.end(o); ++i) sum += v[i];
      dst[o] = sum;
    }
    return;
  }
  const int64_t stride = kStride > 0 ? kStride : a.stride;
  std::fill(dst, dst + a.out, A(0));
  for (int64_t k = 0; k < a.kernel; ++k) {
    const TapRange r = valid_outputs(k, a.in, a.out, stride, a.pad, 1);
    const A* src = v + k - a.pad;
    for (int64_t o = r.lo; o < r.hi; ++o) dst[o] += src[o * stride];
  }
}

// The adjoint of window_sums: dst[i] = sum of g over the outputs whose window holds i.
template <typename A, int64_t kStride>
__attribute__((always_inline)) inline void window_spread(const AvgPoolAxis& a, const A* g, A* dst) {
  if (a.adaptive) {
    for (int64_t i = 0; i < a.in; ++i) {
      A sum = 0;
      for (int64_t o = a.cover_lo(i); o < a.cover_hi(i); ++o) sum += g[o];
      dst[i] = sum;
    }
    return;
  }
  const int64_t stride = kStride > 0 ? kStride : a.stride;
  std::fill(dst, dst + a.in, A(0));
  for (int64_t k = 0; k < a.kernel; ++k) {
    const TapRange r = valid_outputs(k, a.in, a.out, stride, a.pad, 1);
    A* out = dst + k - a.pad;
    for (int64_t o = r.lo; o < r.hi; ++o) out[o * stride] += g[o];
  }
}

// Divisors of one output row, as A.
template <typename A>
void row_divisors(const AvgPool2dParams& p, int64_t oh, A* div) {
  for (int64_t ow = 0; ow < p.w.out; ++ow) div[ow] = static_cast<A>(p.divisor(oh, ow));
}

template <typename T, typename A, int64_t kStride>
void forward_planes(const AvgPool2dParams& p, const T* x, int64_t planes, T* y) {
  std::vector<A> rows(p.w.in), sums(p.w.out), div(p.w.out * p.h.out);
  for (int64_t oh = 0; oh < p.h.out; ++oh) row_divisors(p, oh, div.data() + oh * p.w.out);
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T* in = x + plane * p.in_plane();
    T* out = y + plane * p.out_plane();
    for (int64_t oh = 0; oh < p.h.out; ++oh) {
      std::fill(rows.begin(), rows.end(), A(0));
      for (int64_t h = p.h.start(oh); h < p.h.end(oh); ++h) {
        const T* row = in + h * p.w.in;
        for (int64_t w = 0; w < p.w.in; ++w) rows[w] += static_cast<A>(row[w]);
      }
      window_sums<A, kStride>(p.w, rows.data(), sums.data());
      const A* d = div.data() + oh * p.w.out;
      for (int64_t ow = 0; ow < p.w.out; ++ow)
        out[oh * p.w.out + ow] = static_cast<T>(AvgMath<T>::divide(sums[ow], d[ow]));
    }
  }
}

template <typename T, typename A, int64_t kStride>
void backward_planes(const AvgPool2dParams& p, const T* gy, int64_t planes, T* gx) {
  std::vector<A> scaled(p.out_plane()), rows(p.w.out), spread(p.w.in), div(p.out_plane());
  for (int64_t oh = 0; oh < p.h.out; ++oh) row_divisors(p, oh, div.data() + oh * p.w.out);
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T* g = gy + plane * p.out_plane();
    T* dst = gx + plane * p.in_plane();
    for (int64_t o = 0; o < p.out_plane(); ++o) scaled[o] = AvgMath<T>::divide(static_cast<A>(g[o]), div[o]);
    for (int64_t ih = 0; ih < p.h.in; ++ih) {
      std::fill(rows.begin(), rows.end(), A(0));
      for (int64_t oh = p.h.cover_lo(ih); oh < p.h.cover_hi(ih); ++oh) {
        const A* s = scaled.data() + oh * p.w.out;
        for (int64_t ow = 0; ow < p.w.out; ++ow) rows[ow] += s[ow];
      }
      window_spread<A, kStride>(p.w, rows.data(), spread.data());
      T* row = dst + ih * p.w.in;
      for (int64_t iw = 0; iw < p.w.in; ++iw) row[iw] = static_cast<T>(spread[iw]);
    }
  }
}

// Global average (adaptive output 1 x 1): each output is the mean of a whole
// plane, summed in the accumulation type A; the gradient spreads evenly.
template <typename T, typename A, class Arch>
void global_forward_planes(const T* x, int64_t plane_size, int64_t planes, T* y) {
  for (int64_t plane = 0; plane < planes; ++plane)
    y[plane] = static_cast<T>(AvgMath<T>::divide(
        vector_sum<Arch::kTiles.vec_bytes, A>(x + plane * plane_size, plane_size), static_cast<A>(plane_size)));
}

template <typename T, typename A>
void global_backward_planes(const T* gy, int64_t plane_size, int64_t planes, T* gx) {
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T v = static_cast<T>(AvgMath<T>::divide(static_cast<A>(gy[plane]), static_cast<A>(plane_size)));
    std::fill(gx + plane * plane_size, gx + (plane + 1) * plane_size, v);
  }
}

bool is_global(const AvgPool2dParams& p) { return p.h.adaptive && p.w.adaptive && p.h.out == 1 && p.w.out == 1; }

// Calls f(std::integral_constant<int64_t, S>) with S the horizontal stride if
// it is 1 or 2 (so the tap loops vectorize), else 0 (stride read at run time).
template <typename F>
void with_stride(const AvgPoolAxis& a, F&& f) {
  if (!a.adaptive && a.stride == 1) return f(std::integral_constant<int64_t, 1>{});
  if (!a.adaptive && a.stride == 2) return f(std::integral_constant<int64_t, 2>{});
  return f(std::integral_constant<int64_t, 0>{});
}

// Pools whole planes, one output row at a time. The inner loop tracks, per
// output, the best value and the number of the kernel tap that produced it
// (int32, as wide as a float lane, so value and tap vectorize together); flat
// indices come from the taps through a table once the row is done. kStride is
// the horizontal stride when it is 1 or 2 (known at compile time, so loads
// vectorize), 0 for any other stride.
template <typename T, typename acc_t, int64_t kStride>
void pool_planes(const Pool2dParams& p, const T* x, int64_t planes, T* y, int64_t* idx) {
  const int64_t stride_w = kStride > 0 ? kStride : p.stride_w;
  std::vector<acc_t> best(p.out_w);
  std::vector<int32_t> tap(p.out_w);
  // The kernel rows and columns that some window reads inside the input: the
  // taps are numbered, and the loops run, over those only, since a kernel may
  // be 2^31 wide and tall (and their product would overflow the int32 taps).
  const int64_t kh_lo = first_inside((p.out_h - 1) * p.stride_h - p.pad_h, p.dilation_h);
  const int64_t kh_hi = std::min(p.kernel_h, ceil_div_nonneg(p.in_h + p.pad_h, p.dilation_h));
  const int64_t kw_lo = first_inside((p.out_w - 1) * stride_w - p.pad_w, p.dilation_w);
  const int64_t kw_hi = std::min(p.kernel_w, ceil_div_nonneg(p.in_w + p.pad_w, p.dilation_w));
  const int64_t kw_n = std::max<int64_t>(kw_hi - kw_lo, 0);
  // Input offset of each tap relative to the window's corner.
  std::vector<int64_t> tap_offset(std::max<int64_t>(kh_hi - kh_lo, 0) * kw_n);
  for (int64_t kh = kh_lo; kh < kh_hi; ++kh)
    for (int64_t kw = kw_lo; kw < kw_hi; ++kw)
      tap_offset[(kh - kh_lo) * kw_n + kw - kw_lo] = kh * p.dilation_h * p.in_w + kw * p.dilation_w;
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T* in = x + plane * p.in_plane();
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const int64_t h0 = oh * p.stride_h - p.pad_h;
      const int64_t kh0 = first_inside(h0, p.dilation_h);
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        best[ow] = lowest_value<acc_t>();
        tap[ow] = -1;
      }
      for (int64_t kh = kh0; kh < p.kernel_h && h0 + kh * p.dilation_h < p.in_h; ++kh) {
        const T* row = in + (h0 + kh * p.dilation_h) * p.in_w;
        for (int64_t kw = kw_lo; kw < kw_hi; ++kw) {
          const TapRange r = valid_outputs(kw, p.in_w, p.out_w, stride_w, p.pad_w, p.dilation_w);
          const T* src = row + kw * p.dilation_w - p.pad_w;
          const int32_t t = static_cast<int32_t>((kh - kh_lo) * kw_n + kw - kw_lo);
          for (int64_t ow = r.lo; ow < r.hi; ++ow) {
            const acc_t v = static_cast<acc_t>(src[ow * stride_w]);
            const bool take = (v > best[ow]) || (v != v);  // NaN wins, as in PyTorch (floating types)
            best[ow] = take ? v : best[ow];
            tap[ow] = take ? t : tap[ow];
          }
        }
      }
      T* out = y + (plane * p.out_h + oh) * p.out_w;
      int64_t* arg = idx + (plane * p.out_h + oh) * p.out_w;
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const int64_t w0 = ow * stride_w - p.pad_w;
        out[ow] = static_cast<T>(best[ow]);
        // No tap taken (only lowest_value seen): PyTorch reports the window's first in-bounds element.
        arg[ow] = tap[ow] >= 0 ? h0 * p.in_w + w0 + tap_offset[tap[ow]] : window_first_index(p, h0, w0);
      }
    }
  }
}

template <typename T, class Arch>
void avg_forward(const AvgPool2dParams& p, const T* x, int64_t planes, T* y) {
  using A = typename AvgMath<T>::A;
  if (is_global(p)) return global_forward_planes<T, A, Arch>(x, p.in_plane(), planes, y);
  with_stride(p.w, [&](auto stride) { forward_planes<T, A, decltype(stride)::value>(p, x, planes, y); });
}

template <typename T, class Arch>
void avg_backward(const AvgPool2dParams& p, const T* gy, int64_t planes, T* gx) {
  using A = typename AvgMath<T>::A;
  if (is_global(p)) return global_backward_planes<T, A>(gy, p.in_plane(), planes, gx);
  with_stride(p.w, [&](auto stride) { backward_planes<T, A, decltype(stride)::value>(p, gy, planes, gx); });
}

template <typename T, class Arch>
void max_forward(const Pool2dParams& p, const T* x, int64_t planes, T* y, int64_t* idx) {
  using A = at::opmath_type<T>;
  switch (p.stride_w) {
    case 1:
      return pool_planes<T, A, 1>(p, x, planes, y, idx);
    case 2:
      return pool_planes<T, A, 2>(p, x, planes, y, idx);
    default:
      return pool_planes<T, A, 0>(p, x, planes, y, idx);
  }
}

// channels_last max pooling of output rows [row_begin, row_end) (row = n * out_h + oh):
// output pixel (n, oh, ow) takes, channel by channel, the maximum over its
// window's in-bounds input pixels, each a row of `channels` values, in PyTorch's
// order (rows, then columns; NaN wins; ties keep the first), and PyTorch's index
// where no tap is taken (only lowest values): the first in-bounds row and
// column. The loops over a pixel's channels vectorize for the unit's ISA.
// Channels [c0, c1) of every pixel (all of them, but for float's last ones).
template <typename T>
void max_forward_nhwc_any(const Pool2dParams& p, int64_t channels, int64_t c0, int64_t c1, const T* x,
                          int64_t row_begin, int64_t row_end, T* y, int64_t* idx) {
  using acc_t = at::opmath_type<T>;
  const int64_t count = c1 - c0;
  std::vector<acc_t> best_buffer(count);
  std::vector<int32_t> at_buffer(count);  // input planes below 2^31 elements (max_pool2d_kernel.cpp)
  acc_t* __restrict best = best_buffer.data();
  int32_t* __restrict where = at_buffer.data();
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / p.out_h, oh = row % p.out_h, h0 = oh * p.stride_h - p.pad_h;
    const int64_t kh0 = first_inside(h0, p.dilation_h);
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      const int64_t w0 = ow * p.stride_w - p.pad_w, kw0 = first_inside(w0, p.dilation_w);
      const auto first = static_cast<int32_t>((h0 + kh0 * p.dilation_h) * p.in_w + w0 + kw0 * p.dilation_w);
      for (int64_t c = 0; c < count; ++c) {
        best[c] = lowest_value<acc_t>();
        where[c] = first;
      }
      for (int64_t kh = kh0; kh < p.kernel_h && h0 + kh * p.dilation_h < p.in_h; ++kh) {
        for (int64_t kw = kw0; kw < p.kernel_w && w0 + kw * p.dilation_w < p.in_w; ++kw) {
          const auto at = static_cast<int32_t>((h0 + kh * p.dilation_h) * p.in_w + w0 + kw * p.dilation_w);
          const T* __restrict src = x + (n * p.in_plane() + at) * channels + c0;
          for (int64_t c = 0; c < count; ++c) {
            const acc_t v = static_cast<acc_t>(src[c]);
            const bool take = (v > best[c]) | (v != v);  // NaN wins, as in PyTorch (floating types)
            best[c] = take ? v : best[c];
            where[c] = take ? at : where[c];
          }
        }
      }
      T* __restrict out = y + (row * p.out_w + ow) * channels + c0;
      int64_t* __restrict arg = idx + (row * p.out_w + ow) * channels + c0;
      for (int64_t c = 0; c < count; ++c) {
        out[c] = static_cast<T>(best[c]);
        arg[c] = where[c];
      }
    }
  }
}

// float, the pooling of CNNs: the running maxima and positions of kVectors vectors of one output
// pixel's channels, held in registers across its window's taps (the loop above loads and stores
// them at every tap, which measured slower than NCHW pooling on 16 - 32 channels).
template <int64_t B, int64_t kVectors>
struct MaxTile {
  using F = Vec<float, B>;
  using I = Bits<float, B>;
  static constexpr int64_t V = kLanes<float, B>;
  F best[kVectors];
  I where[kVectors];

  explicit MaxTile(int32_t first) {
    for (int64_t u = 0; u < kVectors; ++u) {
      best[u] = F{} + lowest_value<float>();
      where[u] = I{} + first;
    }
  }
  // The tap at input pixel `at`, its channels from src.
  void take(const float* src, int32_t at) {
    for (int64_t u = 0; u < kVectors; ++u) {
      const F v = load_vec<B>(src + u * V);
      const I taken = (v > best[u]) | (v != v);  // NaN wins, as in PyTorch
      best[u] = taken ? v : best[u];
      where[u] = taken ? (I{} + at) : where[u];
    }
  }
  void store(float* out, int64_t* arg) const {
    using Wide = Vec<int64_t, 2 * B>;
    for (int64_t u = 0; u < kVectors; ++u) {
      store_vec<float, B>(out + u * V, best[u]);
      const Wide wide = __builtin_convertvector(where[u], Wide);
      std::memcpy(arg + u * V, &wide, sizeof(wide));
    }
  }
};

// A window wholly inside the input (the 2 x 2 and 3 x 3 windows of CNNs, but at the edges of padded
// ones): its taps tap[t] pixels from its corner at0, no bound checks.
template <int64_t B, int64_t kVectors>
void max_inside_window_nhwc(const float* corner, int64_t channels, int32_t at0, const int32_t* tap, int64_t taps,
                            float* out, int64_t* arg) {
  MaxTile<B, kVectors> tile(at0);
  for (int64_t t = 0; t < taps; ++t) tile.take(corner + tap[t] * channels, at0 + tap[t]);
  tile.store(out, arg);
}

// Any other window: its in-bounds taps only, `first` where it takes none.
template <int64_t B, int64_t kVectors>
void max_window_nhwc(const Pool2dParams& p, const float* sample, int64_t channels, int64_t h0, int64_t w0,
                     int32_t first, float* out, int64_t* arg) {
  MaxTile<B, kVectors> tile(first);
  for (int64_t kh = first_inside(h0, p.dilation_h); kh < p.kernel_h && h0 + kh * p.dilation_h < p.in_h; ++kh) {
    for (int64_t kw = first_inside(w0, p.dilation_w); kw < p.kernel_w && w0 + kw * p.dilation_w < p.in_w; ++kw) {
      const auto at = static_cast<int32_t>((h0 + kh * p.dilation_h) * p.in_w + w0 + kw * p.dilation_w);
      tile.take(sample + at * channels, at);
    }
  }
  tile.store(out, arg);
}

// channels_last max pooling (as max_forward_nhwc_any) for float, channels [0, channels) in vectors of
// B bytes held in register tiles (channels >= one vector): four vectors a step, then one, then, where
// the channels are not whole vectors, one more ending at the last channel, which recomputes channels
// of the one before it, to the same values and indices.
template <int64_t B>
void max_rows_nhwc_float(const Pool2dParams& p, int64_t channels, const float* x, int64_t row_begin, int64_t row_end,
                         float* y, int64_t* idx) {
  constexpr int64_t V = kLanes<float, B>;
  const int64_t whole = channels / V * V;
  const int64_t reach_h = (p.kernel_h - 1) * p.dilation_h, reach_w = (p.kernel_w - 1) * p.dilation_w;
  std::vector<int32_t> tap;  // a window's taps in PyTorch's order, in pixels from its corner
  for (int64_t kh = 0; kh < p.kernel_h; ++kh)
    for (int64_t kw = 0; kw < p.kernel_w; ++kw)
      tap.push_back(static_cast<int32_t>(kh * p.dilation_h * p.in_w + kw * p.dilation_w));
  const int64_t taps = static_cast<int64_t>(tap.size());
  // window(kVectors, c) for the channels [c, c + kVectors * V) of one pixel.
  const auto by_vectors = [whole, channels](const auto& window) {
    int64_t c = 0;
    for (; c + 4 * V <= whole; c += 4 * V) window(std::integral_constant<int64_t, 4>(), c);
    for (; c < whole; c += V) window(std::integral_constant<int64_t, 1>(), c);
    if (whole < channels) window(std::integral_constant<int64_t, 1>(), channels - V);
  };
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / p.out_h, oh = row % p.out_h, h0 = oh * p.stride_h - p.pad_h;
    const float* sample = x + n * p.in_plane() * channels;
    const bool rows_inside = h0 >= 0 && h0 + reach_h < p.in_h;
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      const int64_t w0 = ow * p.stride_w - p.pad_w;
      float* out = y + (row * p.out_w + ow) * channels;
      int64_t* arg = idx + (row * p.out_w + ow) * channels;
      if (rows_inside && w0 >= 0 && w0 + reach_w < p.in_w) {
        const auto at0 = static_cast<int32_t>(h0 * p.in_w + w0);
        const float* corner = sample + at0 * channels;
        by_vectors([&](auto vectors, int64_t c) {
          constexpr int64_t kVectors = decltype(vectors)::value;
          max_inside_window_nhwc<B, kVectors>(corner + c, channels, at0, tap.data(), taps, out + c, arg + c);
        });
      } else {
        const auto first = static_cast<int32_t>(window_first_index(p, h0, w0));
        by_vectors([&](auto vectors, int64_t c) {
          constexpr int64_t kVectors = decltype(vectors)::value;
          max_window_nhwc<B, kVectors>(p, sample + c, channels, h0, w0, first, out + c, arg + c);
        });
      }
    }
  }
}

// channels_last max pooling for float: in the architecture's vectors, or, with fewer channels than one
// of them, in narrower ones (8 and 4 lanes: a loop per channel was far slower than NCHW pooling on
// LeNet's 6 channels, benchmarks/RESULTS.md, session 27); fewer than 4 channels one at a time.
template <class Arch>
void max_forward_nhwc_float(const Pool2dParams& p, int64_t channels, const float* x, int64_t row_begin,
                            int64_t row_end, float* y, int64_t* idx) {
  constexpr int64_t B = Arch::kTiles.vec_bytes;
  if (channels >= kLanes<float, B>) return max_rows_nhwc_float<B>(p, channels, x, row_begin, row_end, y, idx);
  if constexpr (B > 32) {
    if (channels >= kLanes<float, 32>) return max_rows_nhwc_float<32>(p, channels, x, row_begin, row_end, y, idx);
  }
  if constexpr (B > 16) {
    if (channels >= kLanes<float, 16>) return max_rows_nhwc_float<16>(p, channels, x, row_begin, row_end, y, idx);
  }
  max_forward_nhwc_any(p, channels, 0, channels, x, row_begin, row_end, y, idx);
}

template <typename T, class Arch>
void max_forward_nhwc(const Pool2dParams& p, int64_t channels, const T* x, int64_t row_begin, int64_t row_end, T* y,
                      int64_t* idx) {
  if constexpr (std::is_same_v<T, float>) {
    max_forward_nhwc_float<Arch>(p, channels, x, row_begin, row_end, y, idx);
  } else {
    max_forward_nhwc_any(p, channels, 0, channels, x, row_begin, row_end, y, idx);
  }
}

// The entry points of one architecture's loops, for variants.h's table.
template <typename T, class Arch>
const PoolLoops<T>& pool_loops_of() {
  static constexpr PoolLoops<T> loops{&avg_forward<T, Arch>, &avg_backward<T, Arch>, &max_forward<T, Arch>,
                                      &max_forward_nhwc<T, Arch>};
  return loops;
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
