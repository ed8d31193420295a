// im2col and col2im, the data movement of the im2col + GEMM convolution,
// for any element type: the float path (conv2d_im2col_kernel.cpp) and the
// integer one (conv2d_integer_kernel.cpp) share them.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../params.h"

namespace cnnext {
namespace cpu {

// Columns of one sample and group; consecutive rows of col are `ld` apart.
template <typename T>
void im2col(const Conv2dParams& p, const T* x, T* col, int64_t ld) {
  for (int64_t c = 0; c < p.in_per_group(); ++c) {
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        const TapRange cols = valid_outputs(kw, p.in_w, p.out_w, p.stride_w, p.pad_left, p.dilation_w);
        const int64_t x_offset = kw * p.dilation_w - p.pad_left;
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          T* dst = col + oh * p.out_w;
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih < 0 || ih >= p.in_h) {
            std::fill(dst, dst + p.out_w, T(0));
            continue;
          }
          const T* src = x + (c * p.in_h + ih) * p.in_w + x_offset;
          std::fill(dst, dst + cols.lo, T(0));
          for (int64_t ow = cols.lo; ow < cols.hi; ++ow) dst[ow] = src[ow * p.stride_w];
          std::fill(dst + cols.hi, dst + p.out_w, T(0));
        }
        col += ld;
      }
    }
  }
}

// The adjoint of im2col: x[c][ih][iw] = sum of every column entry that im2col copied from there.
template <typename T>
void col2im(const Conv2dParams& p, const T* col, int64_t ld, T* x) {
  std::fill(x, x + p.in_per_group() * p.in_plane(), T(0));
  for (int64_t c = 0; c < p.in_per_group(); ++c) {
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        const TapRange cols = valid_outputs(kw, p.in_w, p.out_w, p.stride_w, p.pad_left, p.dilation_w);
        const int64_t x_offset = kw * p.dilation_w - p.pad_left;
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih < 0 || ih >= p.in_h) continue;
          const T* src = col + oh * p.out_w;
          T* dst = x + (c * p.in_h + ih) * p.in_w + x_offset;
          for (int64_t ow = cols.lo; ow < cols.hi; ++ow) dst[ow * p.stride_w] += src[ow];
        }
        col += ld;
      }
    }
  }
}

}  // namespace cpu
}  // namespace cnnext
