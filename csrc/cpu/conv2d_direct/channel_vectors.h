// Channel vectors: vectors over output channels instead of pixels, for
// forward and grad_input. A step holds kCoVecs vectors of output channels for
// kPix pixels and, per reduction tap (input channel, kernel row, kernel
// column), loads kCoVecs weight vectors (packed [group][tap][output channel],
// pack.h) and broadcasts one staged input value per pixel: more FMAs per load
// than the pixel-vector families, and every lane is an output however narrow
// the plane. Its accumulators hold each pixel's channels side by side: the
// layout of a channels_last output, which takes them as they are (NCHW goes
// through a tile and transposes). Needs output channels in whole vectors; the
// plan (conv2d_plan.cpp) says where it wins.
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

// Output pixels per tile. A block computes a tile's pixels into a scratch
// tile holding the channels of each pixel side by side (whole-vector stores
// of the accumulators), then transposes it into the output planes V x V
// lanes at a time: scattering every lane of the accumulators on its own
// costs a store per output. A multiple of the lanes (the transposes read
// whole squares) and of the step widths (12, 8, 6: no step cut at a tile's end).
constexpr int64_t kChannelVectorTilePixels = 96;
static_assert(kChannelVectorTilePixels % 16 == 0 && kChannelVectorTilePixels % 12 == 0);

// Elements of the scratch tile of one thread.
template <typename T, class Arch>
constexpr int64_t channel_vector_tile_size() {
  return kChannelVectorTilePixels * Arch::kTiles.cv_vectors * kLanes<T, Arch::kTiles.vec_bytes>;
}

// tile[i][j*V + v] = init[j*V + v] (0 without init) + sum_t w[t][j*V + v] * staged[base[i] + tap_offset[t]]
// for kCoVecs vectors of channels and kPix pixels; w rows w_stride apart, tile rows tile_row apart.
// Not inlined: inside the block's loops GCC kept loop state in vector registers
// and spilled accumulators of the FMA loop to the stack; on its own it holds all 24.
template <typename T, class Arch, int64_t kCoVecs, int64_t kPix>
__attribute__((noinline)) void channel_vector_step(const T* staged, const int64_t* base, const int64_t* tap_offset,
                                                   int64_t taps, const T* w, int64_t w_stride, const T* init,
                                                   T* tile, int64_t tile_row) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  Vec<T, B> acc[kCoVecs][kPix] = {};
  if (init)
    for (int64_t j = 0; j < kCoVecs; ++j)
      for (int64_t i = 0; i < kPix; ++i) acc[j][i] = load_vec<B>(init + j * V);
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
  for (int64_t j = 0; j < kCoVecs; ++j)
    for (int64_t i = 0; i < kPix; ++i) store_vec<T, B>(tile + i * tile_row + j * V, acc[j][i]);
}

// Pixels [p, pixels) into tile rows [p, pixels): steps of kPix pixels, then of kPix / 2, ... down to 1.
template <typename T, class Arch, int64_t kCoVecs, int64_t kPix>
__attribute__((always_inline)) inline void channel_vector_pixels(const T* staged, const int64_t* base,
                                                                 const int64_t* tap_offset, int64_t taps, const T* w,
                                                                 int64_t w_stride, const T* init, T* tile,
                                                                 int64_t tile_row, int64_t p, int64_t pixels) {
  for (; p + kPix <= pixels; p += kPix)
    channel_vector_step<T, Arch, kCoVecs, kPix>(staged, base + p, tap_offset, taps, w, w_stride, init,
                                                tile + p * tile_row, tile_row);
  if constexpr (kPix > 1)
    channel_vector_pixels<T, Arch, kCoVecs, kPix / 2>(staged, base, tap_offset, taps, w, w_stride, init, tile,
                                                      tile_row, p, pixels);
}

// out[c][q] = tile[q][c] for q < pixels, c < channels (whole vectors); output
// planes out_plane apart. Reads the tile in whole squares of V rows.
template <typename T, int64_t B>
void store_transposed(const T* tile, int64_t tile_row, int64_t pixels, int64_t channels, T* out, int64_t out_plane) {
  constexpr int64_t V = kLanes<T, B>;
  for (int64_t c0 = 0; c0 < channels; c0 += V) {
    for (int64_t q0 = 0; q0 < pixels; q0 += V) {
      Vec<T, B> rows[V];
      for (int64_t k = 0; k < V; ++k) rows[k] = load_vec<B>(tile + (q0 + k) * tile_row + c0);
      transpose_square<T, B>(rows);
      const int64_t n = std::min(V, pixels - q0);
      for (int64_t k = 0; k < V; ++k) {
        T* dst = out + (c0 + k) * out_plane + q0;
        if (n == V) {
          store_vec<T, B>(dst, rows[k]);
        } else {
          store_first<T, B>(dst, rows[k], n);
        }
      }
    }
  }
}

// All pixels of one block of kCoVecs vectors of output channels. `out`: NCHW
// planes c.out_h * c.out_w apart (pixel_stride 1), reached through `tile`
// (channel_vector_tile_size elements); or channels_last pixels pixel_stride
// elements apart, which take the accumulators' whole vectors as they are.
template <typename T, class Arch, int64_t kCoVecs>
void channel_vector_block(const Correlation& c, const T* staged, const int64_t* base, const int64_t* tap_offset,
                          const T* w, int64_t w_stride, const T* bias, T* out, int64_t pixel_stride, T* tile) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, tile_row = kCoVecs * kLanes<T, B>;
  constexpr int64_t kPix = cv_width<Arch>(kCoVecs);
  const int64_t pixels = c.out_h * c.out_w, taps = c.taps();
  if (pixel_stride != 1) {
    channel_vector_pixels<T, Arch, kCoVecs, kPix>(staged, base, tap_offset, taps, w, w_stride, bias, out,
                                                  pixel_stride, 0, pixels);
    return;
  }
  for (int64_t p0 = 0; p0 < pixels; p0 += kChannelVectorTilePixels) {
    const int64_t n = std::min(kChannelVectorTilePixels, pixels - p0);
    channel_vector_pixels<T, Arch, kCoVecs, kPix>(staged, base + p0, tap_offset, taps, w, w_stride, bias, tile,
                                                  tile_row, 0, n);
    store_transposed<T, B>(tile, tile_row, n, tile_row, out + p0, pixels);
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
