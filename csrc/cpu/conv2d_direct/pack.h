// Weight packing for the two kernel layouts. `at(g, oc, ch, kh, kw)` reads
// the source weight of output channel oc (within group g) for reduction
// channel ch and tap (kh, kw); forward reads the weights as they are,
// grad_input flipped and channel-transposed (driver.h).
#pragma once

#include <cstdint>
#include <vector>

namespace cnnext {
namespace cpu {
namespace {

// For the pixel-vector families: packed[g][block][ch][kh][kw][j], blocks of
// `oc_block` output channels, zero for channels past the end of the last block.
template <typename T, typename Fn>
std::vector<T> pack_pixel_vector_weights(int64_t oc_block, int64_t groups, int64_t outs, int64_t channels,
                                         int64_t kernel_h, int64_t kernel_w, Fn at) {
  const int64_t blocks = (outs + oc_block - 1) / oc_block;
  const int64_t taps = kernel_h * kernel_w;
  std::vector<T> packed(groups * blocks * channels * taps * oc_block, T(0));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t oc = 0; oc < outs; ++oc)
      for (int64_t ch = 0; ch < channels; ++ch)
        for (int64_t kh = 0; kh < kernel_h; ++kh)
          for (int64_t kw = 0; kw < kernel_w; ++kw) {
            const int64_t block = g * blocks + oc / oc_block;
            packed[((block * channels + ch) * taps + kh * kernel_w + kw) * oc_block + oc % oc_block] =
                at(g, oc, ch, kh, kw);
          }
  return packed;
}

// For the channel-vector family: packed[g][ch][kh][kw][oc].
template <typename T, typename Fn>
std::vector<T> pack_channel_vector_weights(int64_t groups, int64_t outs, int64_t channels, int64_t kernel_h,
                                           int64_t kernel_w, Fn at) {
  const int64_t taps = channels * kernel_h * kernel_w;
  std::vector<T> packed(groups * taps * outs);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t ch = 0; ch < channels; ++ch)
      for (int64_t kh = 0; kh < kernel_h; ++kh)
        for (int64_t kw = 0; kw < kernel_w; ++kw)
          for (int64_t oc = 0; oc < outs; ++oc)
            packed[((g * channels + ch) * kernel_h * kernel_w + kh * kernel_w + kw) * outs + oc] =
                at(g, oc, ch, kh, kw);
  return packed;
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
