// grad_weight of a pointwise layer (1 x 1, stride 1, no padding: params.h
// is_pointwise), where the weight gradient of a group is
//   dW[o][i] = sum_p dy[p][o] * x[p][i],
// one rank-1 update per pixel. A step keeps a tile of the sums in registers:
// kVecs vectors of one operand's channels (the vector side, loaded from each
// pixel's row) by kRows channels of the other (the broadcast side, a scalar
// each), over a band of pixels. Each loaded vector feeds kRows FMAs, as in a
// GEMM's micro-kernel. On channels_last activations both operands are read
// where they lie: nothing is packed and nothing copied (im2col's pointwise
// GEMM packs both of them, and the other grad_weight families stage the input
// into planes). On NCHW activations the broadcast side is read where it lies
// too, each channel a plane of its own (planar: a sample's pixels in one run,
// the next sample's a run further on), and only the vector side, the operand
// with fewer channels, is transposed into pixel rows. A strided 1 x 1 layer
// (params.h is_one_by_one, channels_last only) is the same product over the
// input pixels under the output pixels, which the driver gathers a band at a
// time.
//
// The vector side's last vector, where its channels are not whole vectors,
// overlaps the one before it, so no load reads past a pixel's channels; the
// sums keep whole vectors (rows padded to them), and whoever reads them takes
// the overlapping lanes from one vector only (pointwise_sums_column). A mask
// on those lanes in the step itself kept GCC from holding the accumulators in
// registers. Broadcast channels go in steps of kRows, then of kRows / 2, ...
// down to 1, so no step computes a row it does not keep.
#pragma once

#include <algorithm>

#include "../vec.h"
#include "pointwise.h"

namespace cnnext {
namespace cpu {
namespace {

// The column of a pointwise_weight_step's sums that holds vector-side channel `channel`, of
// `channels` (at least one vector of V lanes): rows of whole vectors, the last one overlapping.
inline int64_t pointwise_sums_column(int64_t channel, int64_t channels, int64_t V) {
  const int64_t padded = (channels + V - 1) / V * V;
  return channel < padded - V ? channel : channel + padded - channels;
}

// One group's operands over a band of pixels, and the sums they add into:
// sums[b * sums_row + pointwise_sums_column(v)] +=
//     sum_p broadcast(p, b) * vectors[p * vector_pixel + v],
// where broadcast(p, b) = broadcast[p * broadcast_pixel + b] (channels_last), or, planar (NCHW), the band's
// p-th pixel of channel b: channels broadcast_channel apart, pixels in runs of `run` (a sample's plane), the
// band's first run `first_run` long, each run's end run_gap elements before the next one's start.
template <typename T>
struct PointwiseWeightBatch {
  const T* vectors;         // the vector side's channel 0 of the band's first pixel
  int64_t vector_pixel;     // elements between its pixels
  int64_t vector_channels;  // at least one vector of them
  const T* broadcast;       // the broadcast side's channel 0 of the band's first pixel
  int64_t broadcast_pixel;
  int64_t pixels;           // in the band
  T* sums;                  // [broadcast channel][vector channels padded to whole vectors]
  int64_t sums_row;
  int64_t broadcast_channel = 1;  // planar only, as the three below
  int64_t run = 0;
  int64_t first_run = 0;
  int64_t run_gap = 0;
};

// Broadcast rows [row, row + kRows) and vectors [vec, vec + kVecs) of the vector side, over the band.
template <typename T, class Arch, bool kPlanar, int64_t kVecs, int64_t kRows>
__attribute__((always_inline)) inline void pointwise_weight_step(const PointwiseWeightBatch<T>& b, int64_t row,
                                                                 int64_t vec) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  // Each vector's first channel, the last one moved back to end at the last channel.
  int64_t first[kVecs];
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kVecs; ++j) first[j] = std::min((vec + j) * V, b.vector_channels - V);
  const int64_t vector_pixel = b.vector_pixel, broadcast_pixel = b.broadcast_pixel;
  const int64_t channel = kPlanar ? b.broadcast_channel : 1;
  const T* v = b.vectors;
  const T* s = b.broadcast + row * channel;
  Vec<T, B> acc[kRows][kVecs] = {};
  // One run of pixels (all of them in channels_last), then the next one's start.
  for (int64_t q = 0, run_end = kPlanar ? std::min(b.pixels, b.first_run) : b.pixels;;) {
    for (; q < run_end; ++q, v += vector_pixel, s += broadcast_pixel) {
      Vec<T, B> x[kVecs];
      CNNEXT_UNROLL
      for (int64_t j = 0; j < kVecs; ++j) {
        x[j] = load_vec<B>(v + first[j]);
        keep_in_register<T, B>(x[j]);
      }
      CNNEXT_UNROLL
      for (int64_t r = 0; r < kRows; ++r) {
        const T a = s[r * channel];
        CNNEXT_UNROLL
        for (int64_t j = 0; j < kVecs; ++j) acc[r][j] += x[j] * a;
      }
    }
    if (!kPlanar || q == b.pixels) break;
    s += b.run_gap;
    run_end = std::min(b.pixels, q + b.run);
  }
  CNNEXT_UNROLL
  for (int64_t r = 0; r < kRows; ++r)
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kVecs; ++j) {
      T* out = b.sums + (row + r) * b.sums_row + (vec + j) * V;
      store_vec<T, B>(out, load_vec<B>(out) + acc[r][j]);
    }
}

// Broadcast rows [row, end) of vectors [vec, vec + kVecs): steps of kRows rows, then of kRows / 2, ... down to 1.
template <typename T, class Arch, bool kPlanar, int64_t kVecs, int64_t kRows>
__attribute__((always_inline)) inline void pointwise_weight_rows(const PointwiseWeightBatch<T>& b, int64_t row,
                                                                 int64_t end, int64_t vec) {
  for (; row + kRows <= end; row += kRows) pointwise_weight_step<T, Arch, kPlanar, kVecs, kRows>(b, row, vec);
  if constexpr (kRows > 1) pointwise_weight_rows<T, Arch, kPlanar, kVecs, kRows / 2>(b, row, end, vec);
}

// Every tile of broadcast rows [row0, row1) over the band, vectors outermost: a tile's band of vector-side
// values stays in cache while the broadcast rows sweep it. Out of line: inlined into the driver's task beside
// the other layout's band, GCC kept AVX2's loaded vectors and offsets on the stack.
template <typename T, class Arch, bool kPlanar>
__attribute__((noinline)) void pointwise_weight_band(const PointwiseWeightBatch<T>& b, int64_t row0, int64_t row1) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, kMaxVecs = pointwise_max_vectors<Arch>();
  const int64_t vectors = (b.vector_channels + V - 1) / V;
  for (int64_t vec = 0; vec < vectors; vec += kMaxVecs) {
    with_vector_count<kMaxVecs>(vectors - vec, [&](auto count) {
      constexpr int64_t kVecs = decltype(count)::value;
      pointwise_weight_rows<T, Arch, kPlanar, kVecs, pointwise_rows<Arch>(kVecs)>(b, row0, row1, vec);
    });
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
