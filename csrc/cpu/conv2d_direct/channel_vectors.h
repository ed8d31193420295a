// Channel vectors: vectors over output channels instead of pixels, for
// forward and grad_input. A step holds kCoVecs vectors of output channels for
// kPix pixels and, per reduction tap (input channel, kernel row, kernel
// column), loads kCoVecs weight vectors (a block's [tap][output channel],
// pack.h) and broadcasts one staged input value per pixel: more FMAs per load
// than the pixel-vector families, and every lane is an output however narrow
// the plane. Its accumulators hold each pixel's channels side by side: the
// layout of a channels_last output, which takes them as they are (NCHW goes
// through a tile and transposes). For the cache it is blocked as a GEMM is
// (channel_vector_blocking): weights packed per block of output channels,
// samples staged in sets, the reduction cut into parts that every pixel of a
// set sweeps in turn. Needs output channels in whole vectors; the plan
// (conv2d_plan.cpp) says where it wins.
#pragma once

#include <algorithm>
#include <type_traits>

#include "../cache_budget.h"
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

// Channels per block: the width of a block's packed weights (pack.h) and of its steps' rows.
template <typename T, class Arch>
constexpr int64_t cv_block_channels() {
  return Arch::kTiles.cv_vectors * kLanes<T, Arch::kTiles.vec_bytes>;
}

// Output pixels per tile. A block computes a tile's pixels into a scratch
// tile holding the channels of each pixel side by side (whole-vector stores
// of the accumulators), then transposes it into the output planes V x V
// lanes at a time: scattering every lane of the accumulators on its own
// costs a store per output. A multiple of the lanes (the transposes read
// whole squares) and of the step widths (12, 8, 6: no step cut at a tile's end).
constexpr int64_t kChannelVectorTilePixels = 96;
static_assert(kChannelVectorTilePixels % 16 == 0 && kChannelVectorTilePixels % 12 == 0);

// Elements of the scratch tile of one thread: a tile, and the rows past its
// end that store_transposed's whole squares read when a sample ends inside it.
template <typename T, class Arch>
constexpr int64_t channel_vector_tile_size() {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>;
  return (kChannelVectorTilePixels + V) * Arch::kTiles.cv_vectors * V;
}

// The part of a block's reduction a sweep over pixels runs: `count` taps,
// their staged offsets from a pixel's window corner (WindowOffsets::tap) and
// their packed weight rows, w_stride elements apart.
template <typename T>
struct TapSpan {
  const int64_t* offset;
  const T* w;
  int64_t w_stride;
  int64_t count;

  TapSpan part(int64_t first, int64_t n) const { return {offset + first, w + first * w_stride, w_stride, n}; }
};

// What a block's sums start from: one row for every pixel (stride 0: the
// bias; null: zeros), or a row per pixel, `stride` elements apart (the
// partial sums of the taps before a TapSpan part).
template <typename T>
struct StartSums {
  const T* row;
  int64_t stride;

  StartSums at(int64_t pixel) const { return {row ? row + pixel * stride : nullptr, stride}; }
};

// out[i][j*V + v] = start[i][j*V + v] + sum_t w[t][j*V + v] * staged[base[i] + offset[t]]
// for kCoVecs vectors of channels and kPix pixels; out rows out_row apart.
// Not inlined: inside the block's loops GCC kept loop state in vector registers
// and spilled accumulators of the FMA loop to the stack; on its own it holds all 24.
template <typename T, class Arch, int64_t kCoVecs, int64_t kPix>
__attribute__((noinline)) void channel_vector_step(const T* staged, const int64_t* base, TapSpan<T> taps,
                                                   StartSums<T> start, T* out, int64_t out_row) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  Vec<T, B> acc[kCoVecs][kPix] = {};
  if (start.row)
    for (int64_t j = 0; j < kCoVecs; ++j)
      for (int64_t i = 0; i < kPix; ++i) acc[j][i] = load_vec<B>(start.row + i * start.stride + j * V);
  const T* x[kPix];
  for (int64_t i = 0; i < kPix; ++i) x[i] = staged + base[i];
  const T* w = taps.w;
  for (int64_t t = 0; t < taps.count; ++t, w += taps.w_stride) {
    const int64_t off = taps.offset[t];
    Vec<T, B> wv[kCoVecs];
    for (int64_t j = 0; j < kCoVecs; ++j) wv[j] = load_vec<B>(w + j * V);
    for (int64_t i = 0; i < kPix; ++i) {
      const T xs = x[i][off];
      for (int64_t j = 0; j < kCoVecs; ++j) acc[j][i] += wv[j] * xs;
    }
  }
  for (int64_t j = 0; j < kCoVecs; ++j)
    for (int64_t i = 0; i < kPix; ++i) store_vec<T, B>(out + i * out_row + j * V, acc[j][i]);
}

// The last `left` (< kWidth) pixels from p on: one step of exactly that many. Halving the
// width instead ran a 6-wide kernel's last 2 pixels as two 1-pixel steps, whose taps each
// load all the weight vectors for a quarter of the FMAs.
template <typename T, class Arch, int64_t kCoVecs, int64_t kWidth>
__attribute__((always_inline)) inline void channel_vector_last(const T* staged, const int64_t* base,
                                                               TapSpan<T> taps, StartSums<T> start, T* out,
                                                               int64_t out_row, int64_t p, int64_t left) {
  if constexpr (kWidth > 1) {
    if (left == kWidth - 1) {
      channel_vector_step<T, Arch, kCoVecs, kWidth - 1>(staged, base + p, taps, start.at(p), out + p * out_row,
                                                        out_row);
    } else {
      channel_vector_last<T, Arch, kCoVecs, kWidth - 1>(staged, base, taps, start, out, out_row, p, left);
    }
  }
}

// Pixels [0, pixels) into out rows [0, pixels): steps of kPix pixels, then one of the rest.
template <typename T, class Arch, int64_t kCoVecs, int64_t kPix>
__attribute__((always_inline)) inline void channel_vector_pixels(const T* staged, const int64_t* base,
                                                                 TapSpan<T> taps, StartSums<T> start, T* out,
                                                                 int64_t out_row, int64_t pixels) {
  int64_t p = 0;
  for (; p + kPix <= pixels; p += kPix)
    channel_vector_step<T, Arch, kCoVecs, kPix>(staged, base + p, taps, start.at(p), out + p * out_row, out_row);
  channel_vector_last<T, Arch, kCoVecs, kPix>(staged, base, taps, start, out, out_row, p, pixels - p);
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

// A run of pixels of one or more samples staged side by side: base[q] is
// where run pixel q's window begins in the staging (WindowOffsets::base plus
// its sample's staged offset); the run holds `samples` samples of `pixels`
// pixels each. Steps cut across samples, so small planes waste no steps on
// their last few pixels.
struct PixelRun {
  const int64_t* base;
  int64_t pixels, samples;

  int64_t size() const { return pixels * samples; }
};

// Every pixel of a run for a block of kCoVecs vectors of output channels,
// into rows of channels `row` elements apart, run pixel after run pixel: a
// channels_last output (its samples follow each other at that pitch too), or
// partial sums.
template <typename T, class Arch, int64_t kCoVecs>
void channel_vector_rows(const T* staged, const PixelRun& run, TapSpan<T> taps, StartSums<T> start, T* out,
                         int64_t row) {
  channel_vector_pixels<T, Arch, kCoVecs, cv_width<Arch>(kCoVecs)>(staged, run.base, taps, start, out, row,
                                                                    run.size());
}

// The same into NCHW planes: sample s's output channels from out[s], planes
// run.pixels apart, through `tile` (channel_vector_tile_size elements).
template <typename T, class Arch, int64_t kCoVecs>
void channel_vector_planes(const T* staged, const PixelRun& run, TapSpan<T> taps, StartSums<T> start,
                           T* const* out, T* tile) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, tile_row = kCoVecs * kLanes<T, B>;
  for (int64_t q0 = 0; q0 < run.size(); q0 += kChannelVectorTilePixels) {
    const int64_t n = std::min(kChannelVectorTilePixels, run.size() - q0);
    channel_vector_pixels<T, Arch, kCoVecs, cv_width<Arch>(kCoVecs)>(staged, run.base + q0, taps, start.at(q0),
                                                                      tile, tile_row, n);
    for (int64_t q = q0; q < q0 + n;) {
      const int64_t s = q / run.pixels, p = q % run.pixels, m = std::min(q0 + n - q, run.pixels - p);
      store_transposed<T, B>(tile + (q - q0) * tile_row, tile_row, m, tile_row, out[s] + p, run.pixels);
      q += m;
    }
  }
}

// How the channel-vector driver blocks a pass for the cache: `samples`
// staged together, and each block's reduction cut into parts of at most
// `part_taps` taps, each swept over all their pixels before the next (whose
// sums start from the partial ones): the packed weights of a part stay in
// cache across the samples instead of streaming from memory once per sample
// (a 512-channel 3 x 3 block's weights are larger than an L2 cache).
struct ChannelVectorBlocking {
  int64_t samples;
  int64_t part_taps;

  int64_t parts(int64_t taps) const { return taps == 0 ? 1 : (taps + part_taps - 1) / part_taps; }
};

// `outs` output channels per group of `batch` samples and `groups` groups,
// spread over `threads` threads; `channels_last`: partial sums go straight
// into the output's rows, NCHW ones to a scratch of their own.
template <typename T, class Arch>
ChannelVectorBlocking channel_vector_blocking(const Correlation& c, int64_t batch, int64_t groups, int64_t outs,
                                              bool channels_last, int64_t threads) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, element = sizeof(T);
  const int64_t block_outs = std::min(outs, cv_block_channels<T, Arch>());
  const int64_t taps = std::max<int64_t>(c.taps(), 1), tap_bytes = block_outs * element;
  const int64_t parts = (taps * tap_bytes + kChannelVectorWeightBytes - 1) / kChannelVectorWeightBytes;
  const int64_t part_taps = (taps + parts - 1) / parts;
  // Capped at the budget first: a staging too large for it is one sample a set, and must not overflow.
  const int64_t staged_bytes = std::min(staged_size(c, V), kDirectStagingBytes / element) * element;
  const int64_t partial_bytes =
      channels_last || parts == 1 ? 0 : c.out_h * c.out_w * tap_bytes;
  // Weights that stay in cache as a whole: one sample at a time, whose staged planes then stay
  // in L1 (the seed layers; sets of samples would move them out to L2).
  const int64_t blocks = (outs + block_outs - 1) / block_outs;
  if (taps * outs * element <= kChannelVectorWeightBytes)
    return {1, part_taps};
  // Else as many samples as fit, but enough (samples, group, block) tasks for every thread twice;
  // then the batch cut into sets of even size (a last set of a few samples would leave the
  // threads that run it idle for the rest).
  const int64_t spread = batch * groups * blocks / (2 * std::max<int64_t>(threads, 1));
  const int64_t fit = kDirectStagingBytes / (staged_bytes + partial_bytes);
  const int64_t most = std::clamp<int64_t>(std::min(fit, spread), 1, std::max<int64_t>(batch, 1));
  const int64_t sets = (batch + most - 1) / most;
  return {std::max<int64_t>((batch + sets - 1) / std::max<int64_t>(sets, 1), 1), part_taps};
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
