// Channel vectors, scattered: grad_input as the adjoint of the forward
// correlation instead of a correlation of the zero-padded gradient. A step
// holds kCoVecs vectors of input channels for kPix grad_output pixels and one
// kernel tap: over the output channels it loads kCoVecs weight vectors and
// broadcasts one grad_output value per pixel, then adds its sums into the
// input pixels that tap of those windows reads, in a scratch tile of the
// padded input plane with the channels of each pixel side by side. Only real
// gradient values are multiplied, where the correlation (channel_vectors.h)
// multiplies the zeros around the gradient too: a layer without padding
// pads it by kernel - 1 on each side (lenet.conv3's 5 x 5 input: 25 windows
// of 9 taps over a 3 x 3 gradient), and a stride spreads it out with zeros.
// Needs input channels in whole vectors; the plan (conv2d_plan.cpp) says
// where it wins.
#pragma once

#include <algorithm>

#include "../../params.h"
#include "../vec.h"
#include "channel_vectors.h"
#include "geometry.h"

namespace cnnext {
namespace cpu {
namespace {

// Elements of the scratch tiles of one thread for `samples` samples: their planes, plus the rows past
// the last one's end that store_transposed's whole squares read.
template <typename T, class Arch>
int64_t scatter_tile_size(const PaddedPlanes& plane, int64_t samples) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>;
  return (samples * plane.plane() + V) * Arch::kTiles.cv_vectors * V;
}

// The operands of one block of input channels of a set of samples of one group: their grad_output pixels
// run sample after sample, so that a step of pixels runs across samples (a 4 x 4 gradient one sample at a
// time took steps of 6, 6, 3 and 1 pixels, the short ones loading the weights for few FMAs).
template <typename T>
struct ScatterBlock {
  const T* gy;             // the group's grad_output planes, of the set's first sample
  const int64_t* gy_at;    // where each run pixel lies in gy's first plane
  int64_t out_plane;       // elements between the planes of gy
  int64_t pixels;          // run pixels: every grad_output pixel of the set's samples
  int64_t outs;            // output channels of the group: the reduction of every step
  const T* w;              // packed [output channel][kh][kw][input channel], at the block's first input channel
  int64_t w_out;           // elements between output channels of `w`
  const int64_t* window;   // the tile pixel of each run pixel's tap (0, 0): gather_offsets in its sample's tile
  T* tile;                 // the samples' padded planes one after the other, channels of a pixel side by side
  int64_t tile_row;        // elements between pixels of the tile
};

// tile[window[q] + tap][j*V + v] += sum_co w[co][j*V + v] * gy[co] of run pixel q, for run pixels
// q in [q0, q0 + kPix) and kCoVecs vectors of channels (`w` at the tap).
template <typename T, class Arch, int64_t kCoVecs, int64_t kPix>
__attribute__((always_inline)) inline void scatter_step(const ScatterBlock<T>& b, const T* w, int64_t tap,
                                                        int64_t q0) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  Vec<T, B> acc[kCoVecs][kPix] = {};
  const T* x[kPix];
  CNNEXT_UNROLL
  for (int64_t i = 0; i < kPix; ++i) x[i] = b.gy + b.gy_at[q0 + i];
  const int64_t out_plane = b.out_plane, w_out = b.w_out;
  for (int64_t co = 0, off = 0; co < b.outs; ++co, off += out_plane, w += w_out) {
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
  CNNEXT_UNROLL
  for (int64_t i = 0; i < kPix; ++i) {
    T* dst = b.tile + (b.window[q0 + i] + tap) * b.tile_row;
    CNNEXT_UNROLL
    for (int64_t j = 0; j < kCoVecs; ++j) store_vec<T, B>(dst + j * V, load_vec<B>(dst + j * V) + acc[j][i]);
  }
}

// Run pixels [q, pixels) at one tap: steps of kPix pixels, then of kPix / 2, ... down to 1.
template <typename T, class Arch, int64_t kCoVecs, int64_t kPix>
__attribute__((always_inline)) inline void scatter_pixels(const ScatterBlock<T>& b, const T* w, int64_t tap,
                                                          int64_t q) {
  for (; q + kPix <= b.pixels; q += kPix) scatter_step<T, Arch, kCoVecs, kPix>(b, w, tap, q);
  if constexpr (kPix > 1) scatter_pixels<T, Arch, kCoVecs, kPix / 2>(b, w, tap, q);
}

// The tile cropped to the input plane, `channels` per pixel: into channels_last
// pixels of `dx` pixel_stride elements apart, the channels side by side as in
// the tile; or (pixel_stride 1) transposed into NCHW planes in_plane apart.
// Input rows and columns past the padded plane's end are read by no window:
// their gradient is zero.
template <typename T, int64_t B>
void store_tile(const Conv2dParams& p, const PaddedPlanes& plane, const T* tile, int64_t tile_row, int64_t channels,
                T* dx, int64_t pixel_stride) {
  const int64_t width = std::clamp<int64_t>(plane.cols - p.pad_left, 0, p.in_w);
  const int64_t rows = std::clamp<int64_t>(plane.rows - p.pad_top, 0, p.in_h);
  if (pixel_stride != 1) {
    for (int64_t ih = 0; ih < p.in_h; ++ih) {
      const int64_t filled = ih < rows ? width : 0;
      T* dst = dx + ih * p.in_w * pixel_stride;
      for (int64_t iw = 0; iw < filled; ++iw) {
        const T* src = tile + ((ih + p.pad_top) * plane.cols + p.pad_left + iw) * tile_row;
        std::copy(src, src + channels, dst + iw * pixel_stride);
      }
      for (int64_t iw = filled; iw < p.in_w; ++iw)
        std::fill(dst + iw * pixel_stride, dst + iw * pixel_stride + channels, T(0));
    }
    return;
  }
  if (p.pad_left == 0 && plane.cols == p.in_w) {  // rows whole and side by side in both: one run of pixels
    if (rows > 0)
      store_transposed<T, B>(tile + p.pad_top * plane.cols * tile_row, tile_row, rows * p.in_w, channels, dx,
                             p.in_plane());
    for (int64_t c = 0; c < channels && rows < p.in_h; ++c)
      std::fill(dx + c * p.in_plane() + rows * p.in_w, dx + (c + 1) * p.in_plane(), T(0));
    return;
  }
  for (int64_t ih = 0; ih < p.in_h; ++ih) {
    const int64_t filled = ih < rows ? width : 0;
    if (filled > 0)
      store_transposed<T, B>(tile + ((ih + p.pad_top) * plane.cols + p.pad_left) * tile_row, tile_row, filled,
                             channels, dx + ih * p.in_w, p.in_plane());
    if (filled < p.in_w)
      for (int64_t c = 0; c < channels; ++c)
        std::fill(dx + c * p.in_plane() + ih * p.in_w + filled, dx + c * p.in_plane() + (ih + 1) * p.in_w, T(0));
  }
}

// kCoVecs vectors of input channels of `samples` samples and one group: every tap of every window
// into the tiles, then each tile cropped to the input plane into its sample's `dx` (store_tile).
template <typename T, class Arch, int64_t kCoVecs>
void scatter_block(const Conv2dParams& p, const PaddedPlanes& plane, const ScatterBlock<T>& b, int64_t w_tap,
                   int64_t samples, T* const* dx, int64_t pixel_stride) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  const int64_t tile_sample = plane.plane() * b.tile_row;
  std::fill(b.tile, b.tile + samples * tile_sample, T(0));
  for (int64_t kh = 0; kh < p.kernel_h; ++kh)
    for (int64_t kw = 0; kw < p.kernel_w; ++kw)
      scatter_pixels<T, Arch, kCoVecs, cv_width<Arch>(kCoVecs)>(
          b, b.w + (kh * p.kernel_w + kw) * w_tap, kh * p.dilation_h * plane.cols + kw * p.dilation_w, 0);
  for (int64_t s = 0; s < samples; ++s)
    store_tile<T, B>(p, plane, b.tile + s * tile_sample, b.tile_row, kCoVecs * V, dx[s], pixel_stride);
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
