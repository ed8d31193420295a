// Pixel vectors over flattened rows (stride 1, which covers grad_input of
// every convolution). With unit stride, output (oh, x) reads
// staged[ch][(oh + kh*dh) * cols + x + kw*dw]: over the flattened index
// f = oh * cols + x every tap is a constant offset. So the kernel computes
// all cols "virtual" columns of each output row (those past out_w read across
// row ends and are dropped), its vectors run over whole rows instead of
// stopping at each row's end, and narrow outputs (5 x 5, 11 x 11) waste few
// lanes. Results go to `scratch` (oc_block planes of flat_positions), then
// the real columns to `out`.
#pragma once

#include "../vec.h"
#include "geometry.h"

namespace cnnext {
namespace cpu {
namespace {

// acc[j][u] = sum_{ch,kh,kw} w[ch][kh][kw][j] * the vector at staged[ch] + start[u] + kh*dh*cols + kw*dw:
// kBlock vectors of outputs that start at staged offsets start[u], all oc_block channels.
template <typename T, class Arch, int64_t kBlock>
__attribute__((always_inline)) inline void correlate_vectors(
    const Correlation& c, const T* staged, const T* w, const int64_t* start,
    Vec<T, Arch::kTiles.vec_bytes> (&acc)[Arch::kTiles.oc_block][kBlock]) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, kOcBlock = Arch::kTiles.oc_block;
  const int64_t cols = c.staging.cols, plane = c.staging.rows * cols;
  const int64_t taps = c.kernel_h * c.kernel_w;
  for (int64_t ch = 0; ch < c.channels; ++ch) {
    const T* base = staged + ch * plane;
    const T* wc = w + ch * taps * kOcBlock;
    for (int64_t kh = 0; kh < c.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
        const T* x = base + kh * c.dilation_h * cols + kw * c.dilation_w;
        const T* wk = wc + (kh * c.kernel_w + kw) * kOcBlock;
        Vec<T, B> xv[kBlock];
        CNNEXT_UNROLL
        for (int64_t u = 0; u < kBlock; ++u) xv[u] = load_vec<B>(x + start[u]);
        CNNEXT_UNROLL
        for (int64_t j = 0; j < kOcBlock; ++j)
          CNNEXT_UNROLL
          for (int64_t u = 0; u < kBlock; ++u) acc[j][u] += wk[j] * xv[u];
      }
    }
  }
}

// kBlock vectors of outputs from flat position f0, all oc_block channels,
// into scratch planes `flat` apart.
template <typename T, class Arch, int64_t kBlock>
__attribute__((always_inline)) inline void flat_step(const Correlation& c, const T* staged, const T* w, int64_t f0,
                                                     T* scratch, int64_t flat) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>, kOcBlock = Arch::kTiles.oc_block;
  int64_t start[kBlock];
  CNNEXT_UNROLL
  for (int64_t u = 0; u < kBlock; ++u) start[u] = f0 + u * V;
  Vec<T, B> acc[kOcBlock][kBlock] = {};
  correlate_vectors<T, Arch, kBlock>(c, staged, w, start, acc);
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kOcBlock; ++j)
    CNNEXT_UNROLL
    for (int64_t u = 0; u < kBlock; ++u) store_vec<T, B>(scratch + j * flat + f0 + u * V, acc[j][u]);
}

// Scratch elements correlate_flat needs.
template <typename T, class Arch>
int64_t flat_scratch_size(const Correlation& c) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>;
  return c.flat ? Arch::kTiles.oc_block * flat_positions(c, V) : 0;
}

// Steps of pixel_vectors vectors, then single-vector steps where the
// positions end part-way into a step: a single-vector step has the worse
// ratio of loads to FMAs but computes no vector that is not needed (see
// benchmarks/RESULTS.md for what that gains on the narrow seed layers).
template <typename T, class Arch>
void correlate_flat(const Correlation& c, const T* staged, const T* w, const T* bias, int64_t valid, T* out,
                    int64_t out_plane, T* scratch) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>, kBlock = Arch::kTiles.pixel_vectors;
  const int64_t flat = flat_positions(c, V);
  int64_t f0 = 0;
  for (; f0 + kBlock * V <= flat; f0 += kBlock * V) flat_step<T, Arch, kBlock>(c, staged, w, f0, scratch, flat);
  for (; f0 < flat; f0 += V) flat_step<T, Arch, 1>(c, staged, w, f0, scratch, flat);
  const int64_t cols = c.staging.cols;
  for (int64_t j = 0; j < valid; ++j) {
    const T b = bias ? bias[j] : T(0);
    for (int64_t oh = 0; oh < c.out_h; ++oh) {
      transform_row<B>(scratch + j * flat + oh * cols, c.out_w, out + j * out_plane + oh * c.out_w,
                       [b](auto v) { return v + b; });
    }
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
