// Channel vectors: vectors over output channels instead of pixels, for
// forward and grad_input. A step holds kCoVecs vectors of output channels for
// kPix pixels and, per reduction tap (input channel, kernel row, kernel
// column), loads kCoVecs weight vectors (packed [group][tap][output channel],
// pack.h) and broadcasts one staged input value per pixel: more FMAs per load
// than the pixel-vector families, and every lane is an output however narrow
// the plane. Needs output channels in whole vectors; the plan
// (conv2d_plan.cpp) says where it wins.
#pragma once

#include <algorithm>
#include <type_traits>

#include "../vec.h"
#include "geometry.h"

namespace cnnext {
namespace cpu {
namespace {

// Pixels (grad_weight: taps) per step for `vectors` vectors of channels.
template <class Arch>
constexpr int64_t cv_width(int64_t vectors) {
  return std::min<int64_t>(Arch::kTiles.cv_max_pixels, Arch::kTiles.cv_accumulators / vectors);
}

// out[j*V + v][i] = bias[j*V + v] + sum_t w[t][j*V + v] * staged[base[i] + tap_offset[t]]
// for kCoVecs vectors of channels (planes out_plane apart) and kPix pixels; w rows w_stride apart.
template <typename T, class Arch, int64_t kCoVecs, int64_t kPix>
__attribute__((always_inline)) inline void channel_vector_step(const T* staged, const int64_t* base,
                                                               const int64_t* tap_offset, int64_t taps, const T* w,
                                                               int64_t w_stride, const T* bias, T* out,
                                                               int64_t out_plane) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  Vec<T, B> acc[kCoVecs][kPix] = {};
  const T* x[kPix];
  for (int64_t i = 0; i < kPix; ++i) x[i] = staged + base[i];
  for (int64_t t = 0; t < taps; ++t, w += w_stride) {
    const int64_t off = tap_offset[t];
    Vec<T, B> wv[kCoVecs];
    for (int64_t j = 0; j < kCoVecs; ++j) wv[j] = load_vec<B>(w + j * V);
    for (int64_t i = 0; i < kPix; ++i) {
      const T xs = x[i][off];
      for (int64_t j = 0; j < kCoVecs; ++j) acc[j][i] += wv[j] * xs;
    }
  }
  for (int64_t j = 0; j < kCoVecs; ++j) {
    for (int64_t v = 0; v < V; ++v) {
      const T b = bias ? bias[j * V + v] : T(0);
      T* dst = out + (j * V + v) * out_plane;
      for (int64_t i = 0; i < kPix; ++i) dst[i] = acc[j][i][v] + b;
    }
  }
}

// Pixels [p, pixels) of one block: steps of kPix pixels, then of kPix / 2, ... down to 1.
template <typename T, class Arch, int64_t kCoVecs, int64_t kPix>
__attribute__((always_inline)) inline void channel_vector_pixels(const Correlation& c, const T* staged,
                                                                 const int64_t* base, const int64_t* tap_offset,
                                                                 const T* w, int64_t w_stride, const T* bias, T* out,
                                                                 int64_t p) {
  const int64_t pixels = c.out_h * c.out_w, taps = c.taps();
  for (; p + kPix <= pixels; p += kPix)
    channel_vector_step<T, Arch, kCoVecs, kPix>(staged, base + p, tap_offset, taps, w, w_stride, bias, out + p,
                                                pixels);
  if constexpr (kPix > 1)
    channel_vector_pixels<T, Arch, kCoVecs, kPix / 2>(c, staged, base, tap_offset, w, w_stride, bias, out, p);
}

// All pixels of one block of kCoVecs vectors of output channels.
template <typename T, class Arch, int64_t kCoVecs>
void channel_vector_block(const Correlation& c, const T* staged, const int64_t* base, const int64_t* tap_offset,
                          const T* w, int64_t w_stride, const T* bias, T* out) {
  channel_vector_pixels<T, Arch, kCoVecs, cv_width<Arch>(kCoVecs)>(c, staged, base, tap_offset, w, w_stride, bias,
                                                                   out, 0);
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
