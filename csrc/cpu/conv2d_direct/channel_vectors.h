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
// bias, or zeros), or a row per pixel, `stride` elements apart (the partial
// sums of the taps before a TapSpan part). Never null: a step that chose
// between loads and zeros kept its accumulators on the stack, and a step over
// a short reduction (1 x 1 kernels) waited on their stores.
template <typename T>
struct StartSums {
  const T* row;
  int64_t stride;

  StartSums at(int64_t pixel) const { return {row + pixel * stride, stride}; }
};

// acc[j][i] += sum over taps t in [begin, end) of w[t][j*V + v] * x[i][offset[t]]: the FMA loop of
// both steps.
template <typename T, int64_t B, int64_t kCoVecs, int64_t kPix>
__attribute__((always_inline)) inline void add_taps(Vec<T, B> (&acc)[kCoVecs][kPix], const T* const (&x)[kPix],
                                                    const TapSpan<T>& taps, int64_t begin, int64_t end) {
  constexpr int64_t V = kLanes<T, B>;
  const T* w = taps.w + begin * taps.w_stride;
  for (int64_t t = begin; t < end; ++t, w += taps.w_stride) {
    const int64_t off = taps.offset[t];
    Vec<T, B> wv[kCoVecs];
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kCoVecs; ++j) wv[j] = load_vec<B>(w + j * V);
    CNNEXT_UNROLL
    for (int64_t i = 0; i < kPix; ++i) {
      const T xs = x[i][off];
      CNNEXT_UNROLL
      for (int64_t j = 0; j < kCoVecs; ++j) acc[j][i] += wv[j] * xs;
    }
  }
}

// out[i][j*V + v] = start[i][j*V + v] + sum_t w[t][j*V + v] * staged[base[i] + offset[t]]
// for kCoVecs vectors of channels and kPix pixels; out rows out_row apart.
// Not inlined: inside the block's loops GCC kept loop state in vector registers
// and spilled accumulators of the FMA loop to the stack; on its own it holds all 24.
template <typename T, class Arch, int64_t kCoVecs, int64_t kPix>
__attribute__((noinline)) void channel_vector_step(const T* staged, const int64_t* base, TapSpan<T> taps,
                                                   StartSums<T> start, T* out, int64_t out_row) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  Vec<T, B> acc[kCoVecs][kPix];
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kCoVecs; ++j)
    CNNEXT_UNROLL
    for (int64_t i = 0; i < kPix; ++i) acc[j][i] = load_vec<B>(start.row + i * start.stride + j * V);
  const T* x[kPix];
  CNNEXT_UNROLL
  for (int64_t i = 0; i < kPix; ++i) x[i] = staged + base[i];
  add_taps<T, B, kCoVecs, kPix>(acc, x, taps, 0, taps.count);
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kCoVecs; ++j)
    CNNEXT_UNROLL
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

// A run of the reduction, taps [begin, end) (kernel-major: WindowOffsets).
struct TapRange {
  int64_t begin, end;
};

// Where the sums of a step over pixels scattered in their rows go: pixel i's
// row at out + row[i] * out_row. They start from those rows (`accumulate`:
// the partial sums of the taps before), else from the bias (null: zeros).
template <typename T>
struct SumRows {
  T* out;
  const int64_t* row;
  int64_t out_row;
  const T* bias;
  bool accumulate;

  SumRows at(int64_t pixel) const { return {out, row + pixel, out_row, bias, accumulate}; }
};

// channel_vector_step over the taps of `ranges` only (the rest of the
// window reads the border), into rows scattered as `sums` says.
template <typename T, class Arch, int64_t kCoVecs, int64_t kPix>
__attribute__((noinline)) void channel_vector_window_step(const T* staged, const int64_t* base, TapSpan<T> taps,
                                                          const TapRange* ranges, int64_t range_count,
                                                          SumRows<T> sums) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  Vec<T, B> acc[kCoVecs][kPix];
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kCoVecs; ++j)
    CNNEXT_UNROLL
    for (int64_t i = 0; i < kPix; ++i)
      acc[j][i] = sums.accumulate ? load_vec<B>(sums.out + sums.row[i] * sums.out_row + j * V)
                  : sums.bias     ? load_vec<B>(sums.bias + j * V)
                                  : Vec<T, B>{};
  const T* x[kPix];
  CNNEXT_UNROLL
  for (int64_t i = 0; i < kPix; ++i) x[i] = staged + base[i];
  for (int64_t r = 0; r < range_count; ++r)
    add_taps<T, B, kCoVecs, kPix>(acc, x, taps, ranges[r].begin, ranges[r].end);
  CNNEXT_UNROLL
  for (int64_t j = 0; j < kCoVecs; ++j)
    CNNEXT_UNROLL
    for (int64_t i = 0; i < kPix; ++i) store_vec<T, B>(sums.out + sums.row[i] * sums.out_row + j * V, acc[j][i]);
}

// Pixels [0, pixels) of one window class: steps of kPix, then one of exactly the rest.
template <typename T, class Arch, int64_t kCoVecs, int64_t kPix>
void channel_vector_window_pixels(const T* staged, const int64_t* base, TapSpan<T> taps, const TapRange* ranges,
                                  int64_t range_count, SumRows<T> sums, int64_t pixels) {
  int64_t p = 0;
  for (; p + kPix <= pixels; p += kPix)
    channel_vector_window_step<T, Arch, kCoVecs, kPix>(staged, base + p, taps, ranges, range_count, sums.at(p));
  if constexpr (kPix > 1) {
    if (p < pixels)
      channel_vector_window_pixels<T, Arch, kCoVecs, kPix - 1>(staged, base + p, taps, ranges, range_count,
                                                               sums.at(p), pixels - p);
  }
}

// A run of staged samples' pixels ordered by window class (WindowClasses):
// class k's pixels of every sample, sample after sample, are run pixels
// [begin[k], begin[k + 1]); base[q] is where run pixel q's window begins in
// the staging and row[q] its row among the samples' output rows.
struct ClassRun {
  const WindowClasses* classes;
  std::vector<int64_t> base, row, begin;
  int64_t samples = -1;

  // The run of `count` samples `staged_sample` elements apart, from the window offsets.
  void build(int64_t count, int64_t staged_sample, const WindowOffsets& offsets, int64_t pixels) {
    if (count == samples) return;
    samples = count;
    base.clear(), row.clear(), begin.clear();
    for (int64_t k = 0; k < classes->count(); ++k) {
      begin.push_back(static_cast<int64_t>(base.size()));
      for (int64_t s = 0; s < count; ++s)
        for (int64_t i = classes->begin[k]; i < classes->begin[k + 1]; ++i) {
          const int64_t q = classes->order[i];
          base.push_back(s * staged_sample + offsets.base[q]);
          row.push_back(s * pixels + q);
        }
    }
    begin.push_back(static_cast<int64_t>(base.size()));
  }
};

// Every pixel of a class-ordered run for a block of kCoVecs vectors of output
// channels, over reduction taps [t0, t1) of `all` (kernel-major: kernel
// position (kh, kw) is taps [(kh * kernel_w + kw) * channels, + channels)),
// skipping each class's border taps. Sums into rows as `out` says, from the
// bias where t0 is the first tap.
template <typename T, class Arch, int64_t kCoVecs>
void channel_vector_classes(const T* staged, const ClassRun& run, const Correlation& c, TapSpan<T> all, int64_t t0,
                            int64_t t1, SumRows<T> out) {
  constexpr int64_t kPix = cv_width<Arch>(kCoVecs);
  std::vector<TapRange> ranges(c.kernel_h);  // adjacent ones merged: at most one per kernel row
  for (int64_t k = 0; k < run.classes->count(); ++k) {
    const WindowClasses::Window& win = run.classes->window[k];
    int64_t count = 0;
    for (int64_t kh = win.kh_lo; kh < win.kh_hi && win.kw_lo < win.kw_hi; ++kh) {
      const int64_t b = std::max(t0, (kh * c.kernel_w + win.kw_lo) * c.channels);
      const int64_t e = std::min(t1, (kh * c.kernel_w + win.kw_hi) * c.channels);
      if (b >= e) continue;
      if (count > 0 && ranges[count - 1].end == b) {
        ranges[count - 1].end = e;
      } else {
        ranges[count++] = {b, e};
      }
    }
    if (count == 0 && t0 > 0) continue;  // nothing to add to the partial sums
    const int64_t first = run.begin[k];
    const SumRows<T> sums{out.out, run.row.data() + first, out.out_row, t0 == 0 ? out.bias : nullptr, t0 > 0};
    channel_vector_window_pixels<T, Arch, kCoVecs, kPix>(staged, run.base.data() + first, all, ranges.data(), count, sums,
                                                         run.begin[k + 1] - first);
  }
}

// Whether the kernels skip the border taps (WindowClasses) of a correlation:
// where they are at least 1/16 of all its taps in NCHW, 1/64 in
// channels_last. Fewer are not worth the class-ordered run's extra partial
// steps and, in NCHW, its rows scratch and transposes; channels_last sums go
// straight to their rows, and gain from skipping the border of 28 x 28 - 56 x 56
// planes too (a 3 x 3 kernel's padding is 2 - 5 % of their taps).
inline bool skips_border(const WindowClasses& classes, int64_t pixels, int64_t kernel, bool channels_last) {
  return classes.border_taps * (channels_last ? 64 : 16) >= pixels * kernel;
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

// How the channel-vector driver blocks a pass for the cache: the batch cut
// into `sets` sets of consecutive samples staged together (sizes differing by
// at most one, `samples` the largest), and each block's reduction cut into
// parts of at most `part_taps` taps, each swept over all their pixels before
// the next (whose sums start from the partial ones): the packed weights of a
// part stay in cache across the samples instead of streaming from memory once
// per sample (a 512-channel 3 x 3 block's weights are larger than an L2 cache).
struct ChannelVectorBlocking {
  int64_t sets;
  int64_t samples;
  int64_t part_taps;

  int64_t parts(int64_t taps) const { return taps == 0 ? 1 : (taps + part_taps - 1) / part_taps; }
  // The first sample of `set` of a batch of `batch` (set == sets: the batch's end).
  int64_t first(int64_t set, int64_t batch) const { return set * batch / sets; }
};

// The fewest sets of at most `most` samples whose (set, group, block) tasks the threads share
// evenly: at::parallel_for gives each thread an equal run of tasks, so either each thread's run
// is whole sets (sets a multiple of the threads) or the sets are equal (batch a multiple of the
// sets) and so are the runs (tasks a multiple of the threads). Six sets of 6, 6, 6, 6, 6 and 2
// samples on two threads left one thread 18 samples' work against 14; sets of 5 or 6 share 16
// and 16. Where no count of sets does (a batch of fewer samples than threads), ceil(batch / most).
inline int64_t balanced_sets(int64_t batch, int64_t most, int64_t tasks_per_set, int64_t threads) {
  const int64_t fewest = (batch + most - 1) / most;
  for (int64_t sets = fewest; sets <= batch; ++sets) {
    if (sets % threads == 0) return sets;
    if (batch % sets == 0 && sets * tasks_per_set % threads == 0) return sets;
  }
  return fewest;
}

// `outs` output channels per group of `batch` samples and `groups` groups,
// spread over `threads` threads; `channels_last`: partial sums go straight
// into the output's rows, NCHW ones to a scratch of their own (`class_runs`:
// every sum, ClassRun).
template <typename T, class Arch>
ChannelVectorBlocking channel_vector_blocking(const Correlation& c, int64_t batch, int64_t groups, int64_t outs,
                                              bool channels_last, bool class_runs, int64_t threads) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, element = sizeof(T);
  const int64_t block_outs = std::min(outs, cv_block_channels<T, Arch>());
  const int64_t taps = std::max<int64_t>(c.taps(), 1), tap_bytes = block_outs * element;
  const int64_t parts = (taps * tap_bytes + kChannelVectorWeightBytes - 1) / kChannelVectorWeightBytes;
  const int64_t part_taps = (taps + parts - 1) / parts;
  // Capped at the budget first: a staging too large for it is one sample a set, and must not overflow.
  const int64_t staged_bytes = std::min(staged_size(c, V), kDirectStagingBytes / element) * element;
  const int64_t partial_bytes =
      channels_last || (parts == 1 && !class_runs) ? 0 : c.out_h * c.out_w * tap_bytes;
  // Weights that stay in cache as a whole: one sample at a time, whose staged planes then stay
  // in L1 (the seed layers; sets of samples would move them out to L2).
  const int64_t blocks = (outs + block_outs - 1) / block_outs;
  if (batch == 0 || taps * outs * element <= kChannelVectorWeightBytes) return {batch, 1, part_taps};
  // Else as many samples as fit, but enough (samples, group, block) tasks for every thread twice,
  // in sets the threads share evenly.
  threads = std::max<int64_t>(threads, 1);
  const int64_t spread = batch * groups * blocks / (2 * threads);
  const int64_t fit = kDirectStagingBytes / (staged_bytes + partial_bytes);
  const int64_t most = std::clamp<int64_t>(std::min(fit, spread), 1, batch);
  const int64_t sets = balanced_sets(batch, most, groups * blocks, threads);
  return {sets, (batch + sets - 1) / sets, part_taps};
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
