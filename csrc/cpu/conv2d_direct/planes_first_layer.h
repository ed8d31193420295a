// Pixel vectors over whole output planes, for layers with few multiply-adds
// per output (first layers: one or three input channels).
//
// Each staged row is copied once per kernel column, shifted by that column,
// gathered at the stride along the row and cut to out_w ("shifted planes");
// with a vertical stride sh, the rows are split by phase (row i of copy
// (ch, kw, phase) is staged row i * sh + phase). Then output pixel
// f = oh * out_w + ow reads tap (kh, kw), with kh * dh = q * sh + phase, in
// copy (ch, kw, phase) at f + q * out_w: a constant offset over the whole
// plane. So vectors run over the output plane as one flat row, across row
// ends: no lane computes a pixel the plane does not have (but where a band's
// last vector, ending at the band's end, overlaps the one before), no load
// is strided, and every vector is stored straight into the output. Rows of
// pixel vectors (a vector per out_w / V, rounded up) waste the rest of each
// row's last vector, store it unaligned, and gather strided rows tap by tap;
// copying every input value kernel_w times costs less than any of these
// where a window has few taps (a copy per input value and kernel column,
// against kernel_h * kernel_w multiply-adds per output channel).
//
// grad_weight reads the same copies: the weight gradient of tap (ch, kh, kw)
// is the dot product of a grad_output plane with its copy from the tap's
// offset, both contiguous.
//
// Large planes are cut into bands of output rows (shifted_bands), so that
// the copies of a band stay in cache while every block of output channels
// sweeps them.
#pragma once

#include <algorithm>
#include <vector>

#include "../cache_budget.h"
#include "../vec.h"
#include "geometry.h"

namespace cnnext {
namespace cpu {
namespace {

// How a plane's output rows are cut into bands, and where a band's shifted
// copies are: copy (ch, kw, phase) holds the band's rows plus `span` more
// (the most whole strides a tap reaches below its output row), out_w
// elements each.
struct ShiftedBands {
  int64_t copies;  // channels x kernel_w x phases
  int64_t out_w;
  int64_t phases;     // the vertical stride
  int64_t span;       // (kernel_h - 1) * dilation_h / stride_h
  int64_t rows;       // output rows per band; the last band also takes the rows left over
  int64_t count;      // bands per plane
  int64_t copy_rows;  // rows per copy, enough for the last band

  int64_t copy() const { return copy_rows * out_w; }
  int64_t size() const { return copies * copy(); }
  int64_t first_row(int64_t band) const { return band * rows; }
  int64_t band_rows(int64_t band, int64_t out_h) const { return band + 1 < count ? rows : out_h - band * rows; }
};

// Bands whose copies fit in kShiftedBandBytes, each of at least one vector of
// pixels (plans run this family only on planes of at least a vector).
inline ShiftedBands shifted_bands(const Correlation& c, int64_t lanes, int64_t element_size) {
  const int64_t span = (c.kernel_h - 1) * c.dilation_h / c.stride_h;
  // Bytes of copies per output row (saturating: a stride no allocation could serve asks for the least rows).
  const int64_t per_row =
      std::max<int64_t>(saturating_product(c.channels * c.kernel_w, c.stride_h, c.out_w * element_size), 1);
  const int64_t least = (lanes + c.out_w - 1) / c.out_w;
  const int64_t rows = std::clamp<int64_t>(kShiftedBandBytes / per_row - span, least, c.out_h);
  const int64_t count = c.out_h / rows;
  return {c.channels * c.kernel_w * c.stride_h, c.out_w, c.stride_h, span, rows, count,
          c.out_h - (count - 1) * rows + span};
}

// shifted[((ch * kernel_w + kw) * phases + phase) * copy + r * out_w + ow] =
// staged[ch][(row0 + r) * sh + phase][ow * sw + kw * dw] for the rows + span rows of a band of `rows`
// output rows from row0; rows past the staging (which no tap of that phase reads) are zeros.
template <typename T, class Arch>
void shift_columns(const Correlation& c, const T* staged, int64_t row0, int64_t rows, const ShiftedBands& s,
                   T* shifted) {
  constexpr int64_t B = Arch::kTiles.vec_bytes;
  const int64_t cols = c.staging.cols, plane = c.staging.rows * cols;
  const int64_t copied = rows + s.span;
  for (int64_t ch = 0; ch < c.channels; ++ch) {
    for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
      for (int64_t phase = 0; phase < s.phases; ++phase) {
        T* dst = shifted + ((ch * c.kernel_w + kw) * s.phases + phase) * s.copy();
        const T* src = staged + ch * plane + kw * c.dilation_w;
        for (int64_t r = 0; r < copied; ++r, dst += s.out_w) {
          const int64_t y = (row0 + r) * c.stride_h + phase;
          if (y >= c.staging.rows) {
            std::fill(dst, dst + s.out_w, T(0));
          } else if (c.stride_w == 1) {
            transform_row<B>(src + y * cols, c.out_w, dst, [](auto v) { return v; });
          } else {
            for (int64_t ow = 0; ow < c.out_w; ++ow) dst[ow] = src[y * cols + ow * c.stride_w];
          }
        }
      }
    }
  }
}

// Where tap t = (ch * kernel_h + kh) * kernel_w + kw reads a sample's shifted copies: at
// tap[t] + f for the band's pixel f.
inline std::vector<int64_t> shifted_tap_offsets(const Correlation& c, const ShiftedBands& s) {
  std::vector<int64_t> tap(c.taps());
  for (int64_t ch = 0; ch < c.channels; ++ch)
    for (int64_t kh = 0; kh < c.kernel_h; ++kh)
      for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
        const int64_t reach = kh * c.dilation_h, phase = reach % s.phases;
        tap[(ch * c.kernel_h + kh) * c.kernel_w + kw] =
            ((ch * c.kernel_w + kw) * s.phases + phase) * s.copy() + reach / s.phases * s.out_w;
      }
  return tap;
}

// One band's operands: its shifted copies, where tap t reads them for pixel f (at tap[t] + f), and
// how many pixels it has (at least one vector).
template <typename T>
struct ShiftedBand {
  const T* shifted;
  const int64_t* tap;
  int64_t taps;
  int64_t pixels;
};

// kBlock vectors of a band's pixels, starting at start[u], all oc_block channels, stored straight
// into the first `valid` output planes (`out`: the band's first pixel in the block's first plane).
// One loop over the taps through their offsets: nested loops over channels and kernel rows and
// columns, three iterations each, cost more in loop overhead than a load of the offset.
template <typename T, class Arch, int64_t kBlock>
__attribute__((always_inline)) inline void plane_step(const ShiftedBand<T>& band, const T* w, const T* bias,
                                                      int64_t valid, T* out, int64_t out_plane, const int64_t* start) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, kOcBlock = Arch::kTiles.oc_block;
  Vec<T, B> acc[kOcBlock][kBlock] = {};
#pragma GCC unroll 3
  for (int64_t t = 0; t < band.taps; ++t) {
    const T* x = band.shifted + band.tap[t];
    const T* wk = w + t * kOcBlock;
    Vec<T, B> xv[kBlock];
    CNNEXT_UNROLL
    for (int64_t u = 0; u < kBlock; ++u) xv[u] = load_vec<B>(x + start[u]);
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kOcBlock; ++j)
      CNNEXT_UNROLL
      for (int64_t u = 0; u < kBlock; ++u) acc[j][u] += wk[j] * xv[u];
  }
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kOcBlock; ++j) {  // constant trip count: acc stays in registers
    if (j >= valid) break;
    const T b = bias ? bias[j] : T(0);
    CNNEXT_UNROLL
    for (int64_t u = 0; u < kBlock; ++u) store_vec<T, B>(out + j * out_plane + start[u], acc[j][u] + b);
  }
}

// Every pixel of a band: steps of pixel_vectors vectors, then one step of the vectors left, the
// last ending at the band's end.
template <typename T, class Arch>
void correlate_planes(const ShiftedBand<T>& band, const T* w, const T* bias, int64_t valid, T* out,
                      int64_t out_plane) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, kBlock = Arch::kTiles.pixel_vectors;
  const int64_t pixels = band.pixels;
  int64_t f = 0;
  for (; f + kBlock * V <= pixels; f += kBlock * V) {
    int64_t start[kBlock];
    CNNEXT_UNROLL
    for (int64_t u = 0; u < kBlock; ++u) start[u] = f + u * V;
    plane_step<T, Arch, kBlock>(band, w, bias, valid, out, out_plane, start);
  }
  if (f == pixels) return;
  with_vector_count<kBlock>((pixels - f + V - 1) / V, [&](auto count) {
    constexpr int64_t kCount = decltype(count)::value;
    int64_t start[kCount];
    CNNEXT_UNROLL
    for (int64_t u = 0; u < kCount; ++u) start[u] = std::min(f + u * V, pixels - V);
    plane_step<T, Arch, kCount>(band, w, bias, valid, out, out_plane, start);
  });
}

// grad_weight's operands for a set of samples of one group, over one band: each sample's shifted
// copies of the band, and grad_output of one block of oc_block channels from the band's first pixel.
template <typename T>
struct ShiftedWeightGrad {
  const T* shifted;
  int64_t shifted_sample;  // elements between samples' copies
  const T* gy;
  int64_t gy_sample;  // elements between samples
  int64_t gy_plane;   // elements between channels
  int64_t samples;
  int64_t pixels;  // of the band, at least one vector
};

// sums[j * taps + k] += the vector sums over one sample's band of gy[j][f] * x[tap[k] + f] for the
// oc_block channels j and kTaps taps k. The band's last vector ends at its end; the lanes it shares
// with the vector before are cleared in both operands (a bitwise clear: 0 * inf would be NaN).
template <typename T, class Arch, int64_t kTaps>
void plane_weight_grad_taps(const T* x, const T* gy, int64_t gy_plane, int64_t pixels, const int64_t* tap,
                            int64_t taps, T* sums) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>, kOcBlock = Arch::kTiles.oc_block;
  const int64_t whole = pixels / V * V;
  const Bits<T, B> tail_keep = lane_mask<T, B>(V - (pixels - whole), V);
  Vec<T, B> acc[kOcBlock][kTaps] = {};
  const auto step = [&](int64_t f, auto tail) {
    constexpr bool kTail = decltype(tail)::value;
    Vec<T, B> xv[kTaps];
    CNNEXT_UNROLL
    for (int64_t k = 0; k < kTaps; ++k) {
      xv[k] = load_vec<B>(x + tap[k] + f);
      if constexpr (kTail) xv[k] = keep_lanes<T, B>(xv[k], tail_keep);
    }
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kOcBlock; ++j) {
      Vec<T, B> gv = load_vec<B>(gy + j * gy_plane + f);
      if constexpr (kTail) {
        gv = keep_lanes<T, B>(gv, tail_keep);
      } else {
        keep_in_register<T, B>(gv);
      }
      CNNEXT_UNROLL
      for (int64_t k = 0; k < kTaps; ++k) acc[j][k] += gv * xv[k];
    }
  };
  for (int64_t f = 0; f < whole; f += V) step(f, std::false_type());
  if (whole < pixels) step(pixels - V, std::true_type());
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kOcBlock; ++j)
    CNNEXT_UNROLL
    for (int64_t k = 0; k < kTaps; ++k) {
      T* sum = sums + (j * taps + k) * V;
      store_vec<T, B>(sum, load_vec<B>(sum) + acc[j][k]);
    }
}

// partial[j * taps + t] += sum_{s, f} gy[s][j][f] * shifted[s][tap[t] + f] for one block of oc_block
// channels and every tap. Sample by sample, three taps at a time (oc_block x 3 accumulators), so that
// a pass over the band reads one sample's grad_output and copies from L1; the vector sums wait in
// `sums` (oc_block x taps vectors) for the horizontal additions at the end.
template <typename T, class Arch>
void plane_weight_grad(const ShiftedWeightGrad<T>& b, const std::vector<int64_t>& tap, T* sums, T* partial) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>, kOcBlock = Arch::kTiles.oc_block;
  const int64_t taps = static_cast<int64_t>(tap.size());
  std::fill(sums, sums + kOcBlock * taps * V, T(0));
  for (int64_t s = 0; s < b.samples; ++s) {
    const T* x = b.shifted + s * b.shifted_sample;
    const T* gy = b.gy + s * b.gy_sample;
    for (int64_t k0 = 0; k0 < taps; k0 += 3) {
      switch (std::min<int64_t>(3, taps - k0)) {
        case 3:
          plane_weight_grad_taps<T, Arch, 3>(x, gy, b.gy_plane, b.pixels, tap.data() + k0, taps, sums + k0 * V);
          break;
        case 2:
          plane_weight_grad_taps<T, Arch, 2>(x, gy, b.gy_plane, b.pixels, tap.data() + k0, taps, sums + k0 * V);
          break;
        default:
          plane_weight_grad_taps<T, Arch, 1>(x, gy, b.gy_plane, b.pixels, tap.data() + k0, taps, sums + k0 * V);
      }
    }
  }
  for (int64_t i = 0; i < kOcBlock * taps; ++i) {
    T sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += sums[i * V + v];
    partial[i] += sum;
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
