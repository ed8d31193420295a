// Forward and grad_input of a pointwise layer (1 x 1, stride 1, no padding:
// params.h is_pointwise) on channels_last activations, where the operand is a
// pixel-major matrix as it lies, so each pass is one product with a small
// matrix:
//   forward     y[p][o]  = bias[o] + sum_i x[p][i] * W[o][i],
//   grad_input  dx[p][i] =           sum_o dy[p][o] * W[o][i],
// out[p][c] = start[c] + sum_k a[p][k] * b[k][c], with b the weight
// transposed (forward) or as it is (grad_input). A step keeps kRows pixels x
// kVecs vectors of output channels in registers over the whole reduction:
// each loaded vector of b feeds kRows FMAs, each broadcast value of a pixel
// kVecs. The output channels need not come in whole vectors: the last vector
// overlaps the one before, and the lanes they share are the same sums, stored
// twice. Pixels go in steps of kRows, then of kRows / 2, ... down to 1.
// A strided 1 x 1 layer (params.h is_one_by_one) is the same product over the
// input pixels under the output pixels: its forward reads them gathered by the
// driver a block at a time, its grad_input writes them into scratch, which the
// driver scatters, with zeros for the input pixels between.
#pragma once

#include <algorithm>

#include "../vec.h"

namespace cnnext {
namespace cpu {
namespace {

// The vectors of one tile of a pointwise step, and the rows (pixels, or grad_weight's broadcast channels) of
// a step with `vectors` of them: as many as the accumulators allow, but at most 4 per vector plus 4, as a step
// of few vectors and many rows waits on its broadcast loads (one vector by 24 rows ran at a third of one by 8).
template <class Arch>
constexpr int64_t pointwise_max_vectors() {
  return Arch::kTiles.cv_accumulators / 4;
}
template <class Arch>
constexpr int64_t pointwise_rows(int64_t vectors) {
  return std::min(Arch::kTiles.cv_accumulators / vectors, 4 * vectors + 4);
}

// One group's pass over a range of pixels.
template <typename T>
struct PointwiseProduct {
  const T* a;          // the pixel-major operand at the group's first channel
  int64_t a_pixel;     // elements between its pixels
  int64_t reduction;   // its channels
  const T* b;          // [k][c]
  int64_t b_row;       // elements between its rows
  const T* start;      // [c]: the bias, or zeros
  int64_t channels;    // output channels c, at least one vector of them
  T* out;              // the output at the group's first channel
  int64_t out_pixel;   // elements between its pixels
};

// Pixels [q, q + kRows), vectors [vec, vec + kVecs) of output channels. Not inlined: inlined into the
// driver's loops, GCC kept AVX2's accumulators on the stack, a load and a store around every FMA.
template <typename T, class Arch, int64_t kVecs, int64_t kRows>
__attribute__((noinline)) void pointwise_step(const PointwiseProduct<T>& m, int64_t q, int64_t vec) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  int64_t first[kVecs];
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kVecs; ++j) first[j] = std::min((vec + j) * V, m.channels - V);
  Vec<T, B> acc[kRows][kVecs];
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kVecs; ++j) {
    const Vec<T, B> start = load_vec<B>(m.start + first[j]);
    CNNEXT_UNROLL
    for (int64_t r = 0; r < kRows; ++r) acc[r][j] = start;
  }
  const T* a = m.a + q * m.a_pixel;
  const int64_t a_pixel = m.a_pixel, b_row = m.b_row;
  for (int64_t k = 0; k < m.reduction; ++k) {
    Vec<T, B> bv[kVecs];
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kVecs; ++j) {
      bv[j] = load_vec<B>(m.b + k * b_row + first[j]);
      keep_in_register<T, B>(bv[j]);
    }
    CNNEXT_UNROLL
    for (int64_t r = 0; r < kRows; ++r) {
      const T s = a[r * a_pixel + k];
      CNNEXT_UNROLL
      for (int64_t j = 0; j < kVecs; ++j) acc[r][j] += bv[j] * s;
    }
  }
  CNNEXT_UNROLL
  for (int64_t r = 0; r < kRows; ++r)
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kVecs; ++j) store_vec<T, B>(m.out + (q + r) * m.out_pixel + first[j], acc[r][j]);
}

// Pixels [q, end) of vectors [vec, vec + kVecs): steps of kRows pixels, then of kRows / 2, ... down to 1.
template <typename T, class Arch, int64_t kVecs, int64_t kRows>
__attribute__((always_inline)) inline void pointwise_pixels(const PointwiseProduct<T>& m, int64_t q, int64_t end,
                                                            int64_t vec) {
  for (; q + kRows <= end; q += kRows) pointwise_step<T, Arch, kVecs, kRows>(m, q, vec);
  if constexpr (kRows > 1) pointwise_pixels<T, Arch, kVecs, kRows / 2>(m, q, end, vec);
}

// Pixels [q0, q1), every output channel, a tile of vectors at a time: the block's rows of `a` stay in cache
// while the tiles sweep them.
template <typename T, class Arch>
void pointwise_block(const PointwiseProduct<T>& m, int64_t q0, int64_t q1) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, kMaxVecs = pointwise_max_vectors<Arch>();
  const int64_t vectors = (m.channels + V - 1) / V;
  for (int64_t vec = 0; vec < vectors; vec += kMaxVecs) {
    with_vector_count<kMaxVecs>(vectors - vec, [&](auto count) {
      constexpr int64_t kVecs = decltype(count)::value;
      pointwise_pixels<T, Arch, kVecs, pointwise_rows<Arch>(kVecs)>(m, q0, q1, vec);
    });
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
