// grad_weight with vectors over input channels, on pixel-major operands:
// dW[t][oc][ic] += sum over output pixels q of gy[q][oc] * x[q's window + t][ic]
// for kTaps kernel taps t, kOcs output channels and kVecs vectors of input
// channels, all held in registers while the sum runs over every output pixel of
// a sample. Each pixel loads kTaps x kVecs input vectors and broadcasts kOcs
// grad_output values, both contiguous: the staged input holds each pixel's
// channels side by side (zero-padded, so no window leaves it), grad_output is
// channels_last as it is or transposed once per sample. A GEMM's outer-product
// step with no column matrix: the taps are offsets into the same staged rows.
// Needs input channels in whole vectors; the plan (conv2d_plan.cpp) says where
// it wins.
#pragma once

#include <algorithm>

#include "../vec.h"

namespace cnnext {
namespace cpu {
namespace {

// The operands of one sample and group, and where a tile of dW goes.
template <typename T>
struct InputVectorWeightSample {
  const T* x;              // staged input, at the tile's first input channel
  int64_t x_row;           // elements between the windows of two neighbouring output rows
  int64_t x_step;          // elements between the windows of two neighbouring outputs of a row
  const T* gy;             // grad_output, channels of a pixel side by side, at the tile's first channel
  int64_t gy_pixel;        // elements between pixels
  int64_t out_h, out_w;
  const int64_t* tap;      // staged offset of each kernel tap from a window's corner
  T* dw;                   // tap-major partial sums [tap][oc][ic] at the tile's first tap, channel, input
  int64_t dw_tap, dw_oc;   // elements between taps, between output channels
};

// Taps [t, t + kTaps), output channels [oc, oc + kOcs), the kVecs vectors of input channels at s.x.
template <typename T, class Arch, int64_t kTaps, int64_t kOcs, int64_t kVecs>
__attribute__((noinline)) void input_vector_weight_step(const InputVectorWeightSample<T>& s, int64_t t, int64_t oc) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  T* dw = s.dw + t * s.dw_tap + oc * s.dw_oc;
  Vec<T, B> acc[kTaps][kOcs][kVecs];
  CNNEXT_UNROLL
  for (int64_t k = 0; k < kTaps; ++k)
    CNNEXT_UNROLL
    for (int64_t o = 0; o < kOcs; ++o)
      CNNEXT_UNROLL
      for (int64_t v = 0; v < kVecs; ++v) acc[k][o][v] = load_vec<B>(dw + k * s.dw_tap + o * s.dw_oc + v * V);
  const int64_t step = s.x_step, gy_pixel = s.gy_pixel;
  for (int64_t oh = 0; oh < s.out_h; ++oh) {
    const T* x[kTaps];
    CNNEXT_UNROLL
    for (int64_t k = 0; k < kTaps; ++k) x[k] = s.x + oh * s.x_row + s.tap[t + k];
    const T* g = s.gy + oh * s.out_w * gy_pixel + oc;
    for (int64_t ow = 0; ow < s.out_w; ++ow, g += gy_pixel) {
      Vec<T, B> xv[kTaps][kVecs];
      CNNEXT_UNROLL
      for (int64_t k = 0; k < kTaps; ++k)
        CNNEXT_UNROLL
        for (int64_t v = 0; v < kVecs; ++v) xv[k][v] = load_vec<B>(x[k] + ow * step + v * V);
      CNNEXT_UNROLL
      for (int64_t o = 0; o < kOcs; ++o) {
        const T go = g[o];
        CNNEXT_UNROLL
        for (int64_t k = 0; k < kTaps; ++k)
          CNNEXT_UNROLL
          for (int64_t v = 0; v < kVecs; ++v) acc[k][o][v] += xv[k][v] * go;
      }
    }
  }
  CNNEXT_UNROLL
  for (int64_t k = 0; k < kTaps; ++k)
    CNNEXT_UNROLL
    for (int64_t o = 0; o < kOcs; ++o)
      CNNEXT_UNROLL
      for (int64_t v = 0; v < kVecs; ++v) store_vec<T, B>(dw + k * s.dw_tap + o * s.dw_oc + v * V, acc[k][o][v]);
}

// Output channels [oc, outs) of taps [t, t + kTaps): steps of kOcs channels, then kOcs / 2, ... down to 1.
template <typename T, class Arch, int64_t kTaps, int64_t kOcs, int64_t kVecs>
__attribute__((always_inline)) inline void input_vector_weight_outs(const InputVectorWeightSample<T>& s, int64_t t,
                                                                    int64_t oc, int64_t outs) {
  for (; oc + kOcs <= outs; oc += kOcs) input_vector_weight_step<T, Arch, kTaps, kOcs, kVecs>(s, t, oc);
  if constexpr (kOcs > 1) input_vector_weight_outs<T, Arch, kTaps, kOcs / 2, kVecs>(s, t, oc, outs);
}

// Input channels in kVecs vectors: taps in groups that hold a step's accumulators to the ISA's
// (Arch::kTiles.cv_accumulators): three taps of one or two vectors (a step then loads as many
// inputs as it broadcasts grad_output values), one tap of more.
template <int64_t kVecs>
constexpr int64_t input_vector_taps() {
  return kVecs <= 2 ? 3 : 1;
}
template <class Arch, int64_t kVecs>
constexpr int64_t input_vector_outs() {
  return std::max<int64_t>(1, Arch::kTiles.cv_accumulators / (input_vector_taps<kVecs>() * kVecs));
}

// Every tap and output channel of one sample for the kVecs vectors of input channels at s.x.
template <typename T, class Arch, int64_t kVecs>
void input_vector_weight_sample(const InputVectorWeightSample<T>& s, int64_t taps, int64_t outs) {
  constexpr int64_t kTaps = input_vector_taps<kVecs>(), kOcs = input_vector_outs<Arch, kVecs>();
  int64_t t = 0;
  for (; t + kTaps <= taps; t += kTaps) input_vector_weight_outs<T, Arch, kTaps, kOcs, kVecs>(s, t, 0, outs);
  // The taps left (fewer than kTaps) one by one, with as many channels as kTaps would hold.
  for (; t < taps; ++t) input_vector_weight_outs<T, Arch, 1, kOcs * kTaps, kVecs>(s, t, 0, outs);
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
