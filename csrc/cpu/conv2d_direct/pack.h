// Weight packing for the two kernel layouts. A WeightView says where a pass
// reads the weight of output channel oc (within group g) for reduction
// channel ch and kernel tap k = kh * kernel_w + kw: forward reads the weights
// as they are, grad_input flipped and channel-transposed (driver.h).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../vec.h"

namespace cnnext {
namespace cpu {
namespace {

// Weight (g, oc, ch, k) of a pass is data[g * group + oc * out + ch * channel + k * tap].
template <typename T>
struct WeightView {
  const T* data;
  int64_t group, out, channel, tap;

  const T* at(int64_t g, int64_t oc, int64_t ch) const { return data + g * group + oc * out + ch * channel; }
};

// The views of a layer's weights w[g * cout + o][i][k] (k = kh * kernel_w + kw), NCHW or
// channels_last (w[g * cout + o][k][i], as a channels_last model holds them: conv2d.cpp passes
// them as they are to the kernels that run in that layout). Packing takes either (the same
// packed weights, so the same results).
template <typename T>
struct LayerWeights {
  const T* data;
  int64_t cout, cin, kernel;
  bool channels_last;

  int64_t group() const { return cout * cin * kernel; }
  int64_t channel_stride() const { return channels_last ? 1 : kernel; }
  int64_t tap_stride() const { return channels_last ? cin : 1; }
  // Forward: output channel o, reduction channel i, taps as they are.
  WeightView<T> as_is() const { return {data, group(), cin * kernel, channel_stride(), tap_stride()}; }
  // grad_input scattered: output channel i, reduction channel o, taps as they are.
  WeightView<T> transposed() const { return {data, group(), channel_stride(), cin * kernel, tap_stride()}; }
  // grad_input as a correlation: output channel i, reduction channel o, taps flipped
  // ((KH-1-kh) * KW + (KW-1-kw) = kernel - 1 - k).
  WeightView<T> flipped() const {
    return {data + (kernel - 1) * tap_stride(), group(), channel_stride(), cin * kernel, -tap_stride()};
  }
};

// For the pixel-vector families: packed[g][block][ch][k][j], blocks of
// `oc_block` output channels, zero for channels past the end of the last block.
template <typename T>
std::vector<T> pack_pixel_vector_weights(int64_t oc_block, int64_t groups, int64_t outs, int64_t channels,
                                         int64_t kernel, const WeightView<T>& w) {
  const int64_t blocks = (outs + oc_block - 1) / oc_block;
  std::vector<T> packed(groups * blocks * channels * kernel * oc_block, T(0));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t oc = 0; oc < outs; ++oc)
      for (int64_t ch = 0; ch < channels; ++ch) {
        const T* src = w.at(g, oc, ch);
        T* dst = packed.data() + ((g * blocks + oc / oc_block) * channels + ch) * kernel * oc_block + oc % oc_block;
        for (int64_t k = 0; k < kernel; ++k) dst[k * oc_block] = src[k * w.tap];
      }
  return packed;
}

// dst[t * dst_row + j] = src[j * src_row + t] for j < rows, t < cols: a
// transpose in squares of V x V through registers, the edges one by one.
template <typename T, int64_t B>
void transpose_rows(const T* src, int64_t src_row, int64_t rows, int64_t cols, T* dst, int64_t dst_row) {
  constexpr int64_t V = kLanes<T, B>;
  int64_t j0 = 0;
  for (; j0 + V <= rows; j0 += V) {
    int64_t t0 = 0;
    for (; t0 + V <= cols; t0 += V) {
      Vec<T, B> square[V];
      for (int64_t k = 0; k < V; ++k) square[k] = load_vec<B>(src + (j0 + k) * src_row + t0);
      transpose_square<T, B>(square);
      for (int64_t k = 0; k < V; ++k) store_vec<T, B>(dst + (t0 + k) * dst_row + j0, square[k]);
    }
    for (int64_t j = j0; j < j0 + V; ++j)
      for (int64_t t = t0; t < cols; ++t) dst[t * dst_row + j] = src[j * src_row + t];
  }
  for (int64_t j = j0; j < rows; ++j)
    for (int64_t t = 0; t < cols; ++t) dst[t * dst_row + j] = src[j * src_row + t];
}

// For the channel-vector families: blocks of `block_outs` output channels
// (the last one narrower), each [ch][k][oc] (`kernel_major`: [k][ch][oc], as
// WindowOffsets orders the taps) over its own channels only, so
// that a block's weights are one contiguous run: block (g, oc0) begins at
// (g * outs + oc0) * channels * kernel, rows of min(block_outs, outs - oc0)
// elements. Whole rows move at a time where the view has them: one transpose
// where an output channel's taps lie side by side (NCHW forward), one per tap
// where a tap's reduction channels do (channels_last forward), copies where
// the output channels do (channels_last grad_input); else one reduction
// channel's weights at a time, in memory order. Every row is written once,
// at its place in either order of taps: the weights of the large layers are
// megabytes, read and written on every call.
template <typename T, int64_t B>
UninitializedVector<T> pack_channel_vector_weights(int64_t block_outs, int64_t groups, int64_t outs, int64_t channels,
                                                   int64_t kernel, const WeightView<T>& w, bool kernel_major = false) {
  const int64_t taps = channels * kernel, blocks = (outs + block_outs - 1) / block_outs;
  const bool rows = w.tap == 1 && w.channel == kernel;
  UninitializedVector<T> packed(groups * taps * outs);  // every block writes all of its own
  // The packed row of reduction tap t = ch * kernel + k.
  const auto row_of = [=](int64_t ch, int64_t k) { return kernel_major ? k * channels + ch : ch * kernel + k; };
  if (!rows && w.channel != 1 && w.out != 1) {
    // Neither the taps nor the output channels side by side (NCHW grad_input, whose reduction channels
    // are the weight's outer ones): a reduction channel at a time, its weights read in memory order
    // (every block of it), each row written whole, straight into either order of taps.
    at::parallel_for(0, groups * channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t g = task / channels, ch = task % channels;
        for (int64_t oc0 = 0; oc0 < outs; oc0 += block_outs) {
          const int64_t width = std::min(block_outs, outs - oc0);
          T* block = packed.data() + (g * outs + oc0) * taps;
          for (int64_t k = 0; k < kernel; ++k) {
            const T* src = w.at(g, oc0, ch) + k * w.tap;
            T* dst = block + row_of(ch, k) * width;
            for (int64_t oc = 0; oc < width; ++oc) dst[oc] = src[oc * w.out];
          }
        }
      }
    });
    return packed;
  }
  // Kernel-major rows from the transposes of taps that lie [ch][k]: V channels at a time into a buffer,
  // then each tap's rows, V channels side by side, as one run. Transposing the whole block first and then
  // reordering it passed over megabytes twice more; storing every transposed row straight at its
  // kernel-major place (rows channels * width elements apart in turn) was slower than the buffer
  // (benchmarks/RESULTS.md, session 28).
  constexpr int64_t V = kLanes<T, B>;
  const bool reorder = rows && kernel_major && kernel > 1 && channels > 1;
  at::parallel_for(0, groups * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> chunk(reorder ? V * kernel * std::min(block_outs, outs) : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / blocks, oc0 = task % blocks * block_outs;
      const int64_t width = std::min(block_outs, outs - oc0);
      T* block = packed.data() + (g * outs + oc0) * taps;
      if (reorder) {
        for (int64_t ch0 = 0; ch0 < channels; ch0 += V) {
          const int64_t n = std::min(V, channels - ch0);
          transpose_rows<T, B>(w.at(g, oc0, ch0), w.out, width, n * kernel, chunk.data(), width);
          for (int64_t k = 0; k < kernel; ++k)
            for (int64_t c = 0; c < n; ++c)
              copy_short<T, B>(chunk.data() + (c * kernel + k) * width, width, block + row_of(ch0 + c, k) * width);
        }
      } else if (rows) {
        transpose_rows<T, B>(w.at(g, oc0, 0), w.out, width, taps, block, width);
      } else if (w.channel == 1) {
        for (int64_t k = 0; k < kernel; ++k)
          transpose_rows<T, B>(w.at(g, oc0, 0) + k * w.tap, w.out, width, channels, block + row_of(0, k) * width,
                               (row_of(1, 0) - row_of(0, 0)) * width);
      } else {  // w.out == 1
        for (int64_t ch = 0; ch < channels; ++ch)
          for (int64_t k = 0; k < kernel; ++k)
            std::copy_n(w.at(g, oc0, ch) + k * w.tap, width, block + row_of(ch, k) * width);
      }
    }
  });
  return packed;
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
