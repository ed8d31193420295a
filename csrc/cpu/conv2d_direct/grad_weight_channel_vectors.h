// grad_weight with channel vectors (tiny planes, see channel_vectors.h):
// partial[t][oc] += sum_{s,p} gyT[s][p][oc] * staged[s][base[p] + tap_offset[t]]
// for kCoVecs vectors of output channels and kTaps reduction taps; gyT holds
// grad_output with the channels of each pixel side by side, so the reduction
// over samples and pixels needs no horizontal sums, and the sums are kept
// tap-major, so that a step adds its accumulators into them as whole vectors
// (dW's [oc][t] took a scalar add per lane, a large share of a step over a
// small plane's pixels).
#pragma once

#include "../vec.h"
#include "channel_vectors.h"
#include "geometry.h"

namespace cnnext {
namespace cpu {
namespace {

// The operands of one block of output channels, for a few staged samples.
template <typename T>
struct ChannelVectorWeightBatch {
  const T* staged;
  int64_t staged_sample;  // elements per staged sample
  const T* gyT;           // grad_output, channels of a pixel side by side, at the block's first channel
  int64_t gy_pixel;       // elements between pixels
  int64_t gy_sample;      // elements between samples
  int64_t samples;
  const int64_t* base;    // staged offset of each output pixel's window (WindowOffsets)
  int64_t pixels;
  const int64_t* tap_offset;  // staged offset of each reduction tap (WindowOffsets)
  int64_t taps;
  T* partial;             // [tap][channel], at the block's first channel
  int64_t partial_row;    // elements between taps
};

// Taps [t, t + kTaps) of one block.
template <typename T, class Arch, int64_t kCoVecs, int64_t kTaps>
__attribute__((always_inline)) inline void channel_vector_weight_step(const ChannelVectorWeightBatch<T>& b,
                                                                      int64_t t) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  // Locals, not loads through `b`, in the loops.
  const int64_t* base = b.base;
  const int64_t pixels = b.pixels, gy_pixel = b.gy_pixel;
  Vec<T, B> acc[kCoVecs][kTaps] = {};
  for (int64_t s = 0; s < b.samples; ++s) {
    const T* x[kTaps];
    for (int64_t k = 0; k < kTaps; ++k) x[k] = b.staged + s * b.staged_sample + b.tap_offset[t + k];
    const T* g = b.gyT + s * b.gy_sample;
    for (int64_t q = 0; q < pixels; ++q, g += gy_pixel) {
      Vec<T, B> gv[kCoVecs];
      for (int64_t j = 0; j < kCoVecs; ++j) gv[j] = load_vec<B>(g + j * V);
      for (int64_t k = 0; k < kTaps; ++k) {
        const T xs = x[k][base[q]];
        for (int64_t j = 0; j < kCoVecs; ++j) acc[j][k] += gv[j] * xs;
      }
    }
  }
  for (int64_t k = 0; k < kTaps; ++k) {
    T* row = b.partial + (t + k) * b.partial_row;
    for (int64_t j = 0; j < kCoVecs; ++j) store_vec<T, B>(row + j * V, load_vec<B>(row + j * V) + acc[j][k]);
  }
}

// Taps [t, taps) of one block: steps of kTaps taps, then of kTaps / 2, ... down to 1.
template <typename T, class Arch, int64_t kCoVecs, int64_t kTaps>
__attribute__((always_inline)) inline void channel_vector_weight_taps(const ChannelVectorWeightBatch<T>& b,
                                                                      int64_t t) {
  for (; t + kTaps <= b.taps; t += kTaps) channel_vector_weight_step<T, Arch, kCoVecs, kTaps>(b, t);
  if constexpr (kTaps > 1) channel_vector_weight_taps<T, Arch, kCoVecs, kTaps / 2>(b, t);
}

// All taps of one block of kCoVecs vectors of output channels.
template <typename T, class Arch, int64_t kCoVecs>
void channel_vector_weight_block(const ChannelVectorWeightBatch<T>& b) {
  channel_vector_weight_taps<T, Arch, kCoVecs, cv_width<Arch>(kCoVecs)>(b, 0);
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
