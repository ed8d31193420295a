// grad_weight of a pointwise layer (1 x 1, stride 1, no padding: params.h
// is_pointwise) on channels_last activations, where grad_output and the input
// are pixel-major matrices as they lie, so the weight gradient of a group is
//   dW[o][i] = sum_p dy[p][o] * x[p][i],
// one rank-1 update per pixel. A step keeps a tile of the sums in registers:
// kVecs vectors of one operand's channels (the vector side, loaded from each
// pixel's row) by kRows channels of the other (the broadcast side, a scalar
// each), over a band of pixels. Each loaded vector feeds kRows FMAs, as in a
// GEMM's micro-kernel, but the operands are read where they lie: nothing is
// packed and nothing copied (im2col's pointwise GEMM packs both of them, and
// the other grad_weight families stage the input into planes). A strided
// 1 x 1 layer (params.h is_one_by_one) is the same product over the input
// pixels under the output pixels, which the driver gathers a band at a time.
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

// One group's operands over a range of pixels, and the sums they add into:
// sums[b * sums_row + pointwise_sums_column(v)] +=
//     sum_p broadcast[p * broadcast_pixel + b] * vectors[p * vector_pixel + v].
template <typename T>
struct PointwiseWeightBatch {
  const T* vectors;         // the vector side's channel 0 of the first pixel
  int64_t vector_pixel;     // elements between its pixels
  int64_t vector_channels;  // at least one vector of them
  const T* broadcast;       // the broadcast side's channel 0 of the first pixel
  int64_t broadcast_pixel;
  T* sums;                  // [broadcast channel][vector channels padded to whole vectors]
  int64_t sums_row;
};

// Broadcast rows [row, row + kRows) and vectors [vec, vec + kVecs) of the vector side, over pixels [p0, p1).
template <typename T, class Arch, int64_t kVecs, int64_t kRows>
__attribute__((always_inline)) inline void pointwise_weight_step(const PointwiseWeightBatch<T>& b, int64_t row,
                                                                 int64_t vec, int64_t p0, int64_t p1) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  // Each vector's first channel, the last one moved back to end at the last channel.
  int64_t first[kVecs];
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kVecs; ++j) first[j] = std::min((vec + j) * V, b.vector_channels - V);
  const int64_t vector_pixel = b.vector_pixel, broadcast_pixel = b.broadcast_pixel;
  const T* v = b.vectors + p0 * vector_pixel;
  const T* s = b.broadcast + p0 * broadcast_pixel + row;
  Vec<T, B> acc[kRows][kVecs] = {};
  for (int64_t q = p0; q < p1; ++q, v += vector_pixel, s += broadcast_pixel) {
    Vec<T, B> x[kVecs];
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kVecs; ++j) {
      x[j] = load_vec<B>(v + first[j]);
      keep_in_register<T, B>(x[j]);
    }
    CNNEXT_UNROLL
    for (int64_t r = 0; r < kRows; ++r) {
      const T a = s[r];
      CNNEXT_UNROLL
      for (int64_t j = 0; j < kVecs; ++j) acc[r][j] += x[j] * a;
    }
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
template <typename T, class Arch, int64_t kVecs, int64_t kRows>
__attribute__((always_inline)) inline void pointwise_weight_rows(const PointwiseWeightBatch<T>& b, int64_t row,
                                                                 int64_t end, int64_t vec, int64_t p0, int64_t p1) {
  for (; row + kRows <= end; row += kRows) pointwise_weight_step<T, Arch, kVecs, kRows>(b, row, vec, p0, p1);
  if constexpr (kRows > 1) pointwise_weight_rows<T, Arch, kVecs, kRows / 2>(b, row, end, vec, p0, p1);
}

// Every tile of broadcast rows [row0, row1) over pixels [p0, p1), vectors outermost: a tile's band of
// vector-side values stays in cache while the broadcast rows sweep it.
template <typename T, class Arch>
void pointwise_weight_band(const PointwiseWeightBatch<T>& b, int64_t row0, int64_t row1, int64_t p0, int64_t p1) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, kMaxVecs = pointwise_max_vectors<Arch>();
  const int64_t vectors = (b.vector_channels + V - 1) / V;
  for (int64_t vec = 0; vec < vectors; vec += kMaxVecs) {
    with_vector_count<kMaxVecs>(vectors - vec, [&](auto count) {
      constexpr int64_t kVecs = decltype(count)::value;
      pointwise_weight_rows<T, Arch, kVecs, pointwise_rows<Arch>(kVecs)>(b, row0, row1, vec, p0, p1);
    });
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
