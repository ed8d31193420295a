// im2col and col2im, the data movement of the im2col + GEMM convolution,
// for any element type: the float path (conv2d_im2col_kernel.cpp) and the
// integer one (conv2d_integer_kernel.cpp) share them.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../params.h"
#include "conv2d_direct/geometry.h"

namespace cnnext {
namespace cpu {

// Kernel rows: the (channel c, kernel row kh) pairs, numbered c * KH + kh;
// each gives KW rows of the column matrix. Work on part of a column matrix
// is cut into ranges of kernel rows.

// The convolution whose output is the tile of rows [oh0, oh0 + rows) and
// columns [ow0, ow0 + cols) of p's: the same input and kernel, with the
// padding moved so that the tile's first pixel is its output (0, 0). Its
// im2col gives exactly the tile's columns. The moved padding may be negative,
// which im2col's bounds handle like any other window position.
inline Conv2dParams tile_params(const Conv2dParams& p, int64_t oh0, int64_t rows, int64_t ow0, int64_t cols) {
  Conv2dParams t = p;
  t.out_h = rows;
  t.out_w = cols;
  t.pad_top = p.pad_top - oh0 * p.stride_h;
  t.pad_left = p.pad_left - ow0 * p.stride_w;
  return t;
}

// dst[i] = src[i * stride] for i in [lo, hi). Stride 2 as a loop of its own, which the compiler
// vectorizes (a stride known only at run time it does not, but for 1); stride 1 stays inline, not a
// call to memmove: rows of 12 - 56 outputs are too short for one.
template <typename T>
void copy_strided(const T* src, T* dst, int64_t lo, int64_t hi, int64_t stride) {
  if (stride == 2) {
    for (int64_t i = lo; i < hi; ++i) dst[i] = src[2 * i];
  } else {
    for (int64_t i = lo; i < hi; ++i) dst[i] = src[i * stride];
  }
}

// The column rows of kernel rows [r_begin, r_end) of one sample and group: x
// is the group's first channel, col the first row of kernel row r_begin;
// consecutive rows of col are `ld` apart.
template <typename T>
void im2col(const Conv2dParams& p, const T* x, T* col, int64_t ld, int64_t r_begin, int64_t r_end) {
  for (int64_t r = r_begin; r < r_end; ++r) {
    const int64_t c = r / p.kernel_h, kh = r % p.kernel_h;
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
        copy_strided(src, dst, cols.lo, cols.hi, p.stride_w);
        std::fill(dst + cols.hi, dst + p.out_w, T(0));
      }
      col += ld;
    }
  }
}

// The adjoint of im2col over channels [c_begin, c_end): x[c][ih][iw] = sum of
// every column entry that im2col copied from there (x as for im2col, col the
// first row of channel c_begin).
template <typename T>
void col2im(const Conv2dParams& p, const T* col, int64_t ld, T* x, int64_t c_begin, int64_t c_end) {
  std::fill(x + c_begin * p.in_plane(), x + c_end * p.in_plane(), T(0));
  for (int64_t c = c_begin; c < c_end; ++c) {
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

// im2col and col2im through a zero-padded copy of the input, for small
// output planes: there im2col's work per row of outputs (bounds, fills)
// costs more than its copies, while here the planes are padded once and
// every column row is then the same gather, one table of offsets (one per
// output pixel) read from a different origin, with no bounds to check.
// (PaddedPlanes and gather_offsets: conv2d_direct/geometry.h.)

// The input rows and columns a padded plane holds: [lo, hi) of the input and where they start in the plane.
struct PaddedSpan {
  int64_t size, at;  // input [0, size) lies at [at, at + size) of the padded axis
};
inline PaddedSpan padded_span(int64_t in, int64_t pad, int64_t padded) {
  return {std::clamp<int64_t>(padded - pad, 0, in), pad};
}

// Channels [c_begin, c_end) of one sample and group (x: the group's first
// channel) into `padded`, one padded plane per channel from c_begin on.
template <typename T>
void pad_planes(const Conv2dParams& p, const PaddedPlanes& pp, const T* x, T* padded, int64_t c_begin, int64_t c_end) {
  const PaddedSpan r = padded_span(p.in_h, p.pad_top, pp.rows), c = padded_span(p.in_w, p.pad_left, pp.cols);
  std::fill(padded, padded + (c_end - c_begin) * pp.plane(), T(0));
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    T* plane = padded + (ch - c_begin) * pp.plane();
    for (int64_t ih = 0; ih < r.size; ++ih) {
      const T* row = x + (ch * p.in_h + ih) * p.in_w;
      std::copy(row, row + c.size, plane + (r.at + ih) * pp.cols + c.at);
    }
  }
}

// The column rows of kernel rows [r_begin, r_end), from the channels pad_planes
// copied to `padded` from channel r_begin / KH on (col as for im2col).
template <typename T>
void im2col_gather(const Conv2dParams& p, const PaddedPlanes& pp, const T* padded, const int64_t* offsets, T* col,
                   int64_t ld, int64_t r_begin, int64_t r_end) {
  const int64_t L = p.out_plane(), first_channel = r_begin / p.kernel_h;
  for (int64_t r = r_begin; r < r_end; ++r) {
    const int64_t c = r / p.kernel_h, kh = r % p.kernel_h;
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      const T* src = padded + (c - first_channel) * pp.plane() + kh * p.dilation_h * pp.cols + kw * p.dilation_w;
      for (int64_t j = 0; j < L; ++j) col[j] = src[offsets[j]];
      col += ld;
    }
  }
}

// The adjoint of im2col_gather followed by pad_planes: x's channels [c_begin, c_end) =
// the column entries summed into padded planes (`padded`: scratch), cropped.
template <typename T>
void col2im_scatter(const Conv2dParams& p, const PaddedPlanes& pp, const T* col, int64_t ld, const int64_t* offsets,
                    T* padded, T* x, int64_t c_begin, int64_t c_end) {
  const int64_t L = p.out_plane();
  std::fill(padded, padded + (c_end - c_begin) * pp.plane(), T(0));
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        T* dst = padded + (ch - c_begin) * pp.plane() + kh * p.dilation_h * pp.cols + kw * p.dilation_w;
        for (int64_t j = 0; j < L; ++j) dst[offsets[j]] += col[j];
        col += ld;
      }
    }
  }
  const PaddedSpan r = padded_span(p.in_h, p.pad_top, pp.rows), c = padded_span(p.in_w, p.pad_left, pp.cols);
  std::fill(x + c_begin * p.in_plane(), x + c_end * p.in_plane(), T(0));  // inputs no window reads
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    const T* plane = padded + (ch - c_begin) * pp.plane();
    for (int64_t ih = 0; ih < r.size; ++ih) {
      const T* row = plane + (r.at + ih) * pp.cols + c.at;
      std::copy(row, row + c.size, x + (ch * p.in_h + ih) * p.in_w);
    }
  }
}

// channels_last (NHWC, groups 1): the column matrix has a row per output
// pixel q = (n * OH + oh) * OW + ow of the batch, holding the pixel's window
// tap by tap (tap t = kh * KW + kw), each tap the C_in values of one input
// pixel: col[q][t * C_in + c] = x[n][ih][iw][c], zero outside the input.

// Rows for pixels [q_begin, q_end), taps [t_begin, t_end) (row q - q_begin of
// col, `ld` apart, starts with tap t_begin).
template <typename T>
void im2col_nhwc(const Conv2dParams& p, const T* x, int64_t q_begin, int64_t q_end, int64_t t_begin, int64_t t_end,
                 T* col, int64_t ld) {
  const int64_t C = p.in_channels;
  for (int64_t q = q_begin; q < q_end; ++q, col += ld) {
    const int64_t n = q / p.out_plane(), oh = q / p.out_w % p.out_h, ow = q % p.out_w;
    T* dst = col;
    for (int64_t t = t_begin; t < t_end; ++t, dst += C) {
      const int64_t ih = oh * p.stride_h - p.pad_top + t / p.kernel_w * p.dilation_h;
      const int64_t iw = ow * p.stride_w - p.pad_left + t % p.kernel_w * p.dilation_w;
      if (ih < 0 || ih >= p.in_h || iw < 0 || iw >= p.in_w) {
        std::fill(dst, dst + C, T(0));
      } else {
        std::copy_n(x + ((n * p.in_h + ih) * p.in_w + iw) * C, C, dst);
      }
    }
  }
}

// The adjoint for pixels [q_begin, q_end), all taps: adds each row's entries
// into the input pixels they were copied from (x is not zeroed first).
template <typename T>
void col2im_nhwc_add(const Conv2dParams& p, const T* col, int64_t ld, int64_t q_begin, int64_t q_end, T* x) {
  const int64_t C = p.in_channels;
  for (int64_t q = q_begin; q < q_end; ++q, col += ld) {
    const int64_t n = q / p.out_plane(), oh = q / p.out_w % p.out_h, ow = q % p.out_w;
    const T* src = col;
    for (int64_t t = 0; t < p.kernel_plane(); ++t, src += C) {
      const int64_t ih = oh * p.stride_h - p.pad_top + t / p.kernel_w * p.dilation_h;
      const int64_t iw = ow * p.stride_w - p.pad_left + t % p.kernel_w * p.dilation_w;
      if (ih < 0 || ih >= p.in_h || iw < 0 || iw >= p.in_w) continue;
      T* dst = x + ((n * p.in_h + ih) * p.in_w + iw) * C;
      for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
    }
  }
}

// All channels of one sample and group.
template <typename T>
void im2col(const Conv2dParams& p, const T* x, T* col, int64_t ld) {
  im2col(p, x, col, ld, 0, p.in_per_group() * p.kernel_h);
}

template <typename T>
void col2im(const Conv2dParams& p, const T* col, int64_t ld, T* x) {
  col2im(p, col, ld, x, 0, p.in_per_group());
}

}  // namespace cpu
}  // namespace cnnext
