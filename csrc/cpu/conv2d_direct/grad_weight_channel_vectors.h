// grad_weight with channel vectors (tiny planes, see channel_vectors.h):
// partial[t][oc] += sum_{s,p} gyT[s][p][oc] * staged[s][base[p] + tap_offset[t]]
// for kCoVecs vectors of output channels and kTaps reduction taps; gyT holds
// grad_output with the channels of each pixel side by side, so the reduction
// over samples and pixels needs no horizontal sums, and the sums are kept
// tap-major, so that a step adds its accumulators into them as whole vectors
// (dW's [oc][t] took a scalar add per lane, a large share of a step over a
// small plane's pixels). Where the windows' border is large enough to skip
// (skips_border), the taps are swept kernel-major, so that a step's taps share
// a kernel position, and a step sums only over the pixels whose windows read
// the source there (WindowRect); the others would add products with the zero
// padding.
#pragma once

#include <algorithm>
#include <vector>

#include "../vec.h"
#include "channel_vectors.h"
#include "geometry.h"

namespace cnnext {
namespace cpu {
namespace {

// The order in which grad_weight's channel vectors sweep the reduction taps,
// and the output pixels each tap sums over.
struct WeightTapSweep {
  WindowOffsets offsets;           // the taps in sweep order (tap_offset), the pixels' windows (base)
  std::vector<int64_t> tap_row;    // the row of the tap-major sums (channel-major tap) of each swept tap
  std::vector<WindowRect> rects;   // per kernel position in sweep order: the pixels whose windows read the source
  int64_t position_taps;           // swept taps per kernel position; all of them where one rect covers every tap

  // `pixel_major`: channels_last, the input staged pixel-major (stage_pixels), whose taps are swept kernel-major.
  WeightTapSweep(const Correlation& c, int64_t src_h, int64_t src_w, bool pixel_major)
      : WeightTapSweep(c,
                       skips_border(WindowClasses(c, src_h, src_w), c.out_h * c.out_w, c.kernel_h * c.kernel_w,
                                    pixel_major),
                       src_h, src_w, pixel_major) {}

 private:
  WeightTapSweep(const Correlation& c, bool skip, int64_t src_h, int64_t src_w, bool pixel_major)
      : offsets(pixel_major ? WindowOffsets::of_pixels(c) : WindowOffsets(c, skip)),
        tap_row(c.taps()),
        position_taps(skip ? c.channels : c.taps()) {
    const int64_t kernel = c.kernel_h * c.kernel_w;
    const bool kernel_major = skip || pixel_major;
    for (int64_t i = 0; i < c.taps(); ++i) tap_row[i] = kernel_major ? i % c.channels * kernel + i / c.channels : i;
    if (skip) {
      rects = window_rects(c, src_h, src_w);
    } else {
      rects = {{0, c.out_h, 0, c.out_w}};
    }
  }
};

// The operands of one block of output channels, for a few staged samples.
template <typename T>
struct ChannelVectorWeightBatch {
  const T* staged;
  int64_t staged_sample;  // elements per staged sample
  const T* gyT;           // grad_output, channels of a pixel side by side, at the block's first channel
  int64_t gy_pixel;       // elements between pixels
  int64_t gy_sample;      // elements between samples
  int64_t samples;
  const WeightTapSweep* sweep;
  int64_t out_h, out_w;
  int64_t band_rows;      // output rows per band (channel_vector_weight_block)
  int64_t taps;
  T* partial;             // [tap][channel], at the block's first channel
  int64_t partial_row;    // elements between taps
  bool first;             // the sums' rows are not yet written: store into them, do not add
};

// Output rows [begin, end).
struct RowBand {
  int64_t begin, end;
};

// Taps [t, t + kTaps) of one block, over the pixels of one band of output rows.
template <typename T, class Arch, int64_t kCoVecs, int64_t kTaps>
__attribute__((always_inline)) inline void channel_vector_weight_step(const ChannelVectorWeightBatch<T>& b,
                                                                      int64_t t, RowBand band) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  const WeightTapSweep& sweep = *b.sweep;
  // The pixels of the kernel positions of taps [t, t + kTaps): mostly one (channels >= taps per step).
  WindowRect r = sweep.rects[t / sweep.position_taps];
  for (int64_t k = t / sweep.position_taps + 1; k <= (t + kTaps - 1) / sweep.position_taps; ++k)
    r = r.hull(sweep.rects[k]);
  r.row_lo = std::max(r.row_lo, band.begin), r.row_hi = std::min(r.row_hi, band.end);
  // Locals, not loads through `b`, in the loops.
  const int64_t* base = sweep.offsets.base.data();
  const int64_t out_w = b.out_w, gy_pixel = b.gy_pixel;
  Vec<T, B> acc[kCoVecs][kTaps] = {};
  for (int64_t s = 0; s < b.samples; ++s) {
    const T* x[kTaps];
    CNNEXT_UNROLL
    for (int64_t k = 0; k < kTaps; ++k) x[k] = b.staged + s * b.staged_sample + sweep.offsets.tap[t + k];
    for (int64_t oh = r.row_lo; oh < r.row_hi; ++oh) {
      const T* g = b.gyT + s * b.gy_sample + (oh * out_w + r.col_lo) * gy_pixel;
      for (int64_t q = oh * out_w + r.col_lo; q < oh * out_w + r.col_hi; ++q, g += gy_pixel) {
        Vec<T, B> gv[kCoVecs];
        CNNEXT_UNROLL
        for (int64_t j = 0; j < kCoVecs; ++j) gv[j] = load_vec<B>(g + j * V);
        CNNEXT_UNROLL
        for (int64_t k = 0; k < kTaps; ++k) {
          const T xs = x[k][base[q]];
          CNNEXT_UNROLL
          for (int64_t j = 0; j < kCoVecs; ++j) acc[j][k] += gv[j] * xs;
        }
      }
    }
  }
  CNNEXT_UNROLL
  for (int64_t k = 0; k < kTaps; ++k) {
    T* row = b.partial + sweep.tap_row[t + k] * b.partial_row;
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kCoVecs; ++j)
      store_vec<T, B>(row + j * V, b.first ? acc[j][k] : load_vec<B>(row + j * V) + acc[j][k]);
  }
}

// Taps [t, taps) of one block over one band: steps of kTaps taps, then of kTaps / 2, ... down to 1.
template <typename T, class Arch, int64_t kCoVecs, int64_t kTaps>
__attribute__((always_inline)) inline void channel_vector_weight_taps(const ChannelVectorWeightBatch<T>& b,
                                                                      int64_t t, RowBand band) {
  for (; t + kTaps <= b.taps; t += kTaps) channel_vector_weight_step<T, Arch, kCoVecs, kTaps>(b, t, band);
  if constexpr (kTaps > 1) channel_vector_weight_taps<T, Arch, kCoVecs, kTaps / 2>(b, t, band);
}

// Taps [t0, b.taps) of one block of kCoVecs vectors of output channels, band after band of output rows:
// every step sweeps its band's grad_output rows, which stay in cache for the next step (a sample's whole
// grad_output would be read from memory by every step on large planes). Where b.first, the first band
// writes the sums.
template <typename T, class Arch, int64_t kCoVecs>
void channel_vector_weight_block(ChannelVectorWeightBatch<T> b, int64_t t0 = 0) {
  const bool first = b.first;
  for (int64_t r0 = 0; r0 < b.out_h; r0 += b.band_rows) {
    b.first = first && r0 == 0;
    const RowBand band{r0, std::min(b.out_h, r0 + b.band_rows)};
    channel_vector_weight_taps<T, Arch, kCoVecs, cv_width<Arch>(kCoVecs)>(b, t0, band);
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
