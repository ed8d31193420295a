// Plain parameter structs shared by every backend.
//
// This header must stay free of torch includes: the CUDA kernels in csrc/cuda
// are compiled by plain nvcc (the CPU torch wheel cannot compile torch's CUDA
// headers), and they read their shapes from these structs.
#pragma once

#include <cstdint>

// Geometry helpers below run on both sides of the CUDA build.
#ifdef __CUDACC__
#define CNNEXT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CNNEXT_HOST_DEVICE inline
#endif

namespace cnnext {

// Everything a 2-D convolution kernel needs to know about its shapes.
// Input (N, C_in, H, W), weight (C_out, C_in / groups, KH, KW), output
// (N, C_out, OH, OW), all contiguous NCHW. Padding is given as the amount
// added before the first row/column; the trailing padding only changes
// OH/OW, which are already resolved here.
struct Conv2dParams {
  int64_t batch;
  int64_t in_channels;
  int64_t out_channels;
  int64_t groups;
  int64_t in_h, in_w;
  int64_t out_h, out_w;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_top, pad_left;
  int64_t dilation_h, dilation_w;

  int64_t in_per_group() const { return in_channels / groups; }
  int64_t out_per_group() const { return out_channels / groups; }
  int64_t in_plane() const { return in_h * in_w; }
  int64_t out_plane() const { return out_h * out_w; }
  int64_t kernel_plane() const { return kernel_h * kernel_w; }
  // Rows of the im2col column matrix of one group: C_in/groups * KH * KW.
  int64_t col_rows() const { return in_per_group() * kernel_plane(); }
};

// A depthwise convolution as the direct algorithm runs it with its own kernels:
// one input channel per group, and fewer output channels per group than the
// general direct kernels compute in one pass over the input on AVX-512 (8,
// all of which but these would be wasted; cpu/conv2d_direct/tiles.h); windows that leave no gaps (stride at most the
// dilated kernel), so that a staged plane is never larger than the padded input.
inline bool is_depthwise(const Conv2dParams& p) {
  return p.in_per_group() == 1 && p.out_per_group() < 8 && p.stride_h <= (p.kernel_h - 1) * p.dilation_h + 1 &&
         p.stride_w <= (p.kernel_w - 1) * p.dilation_w + 1;
}

// A pointwise convolution: 1 x 1, stride 1, no padding. Its im2col column
// matrix is the input itself, and the convolution a plain GEMM.
inline bool is_pointwise(const Conv2dParams& p) {
  return p.kernel_h == 1 && p.kernel_w == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
         p.pad_left == 0 && p.out_h == p.in_h && p.out_w == p.in_w;
}

// A 1 x 1 convolution whose every output pixel (oh, ow) reads the input
// pixel (oh * stride_h, ow * stride_w): no padding on any side, any stride
// (ResNet's stride-2 shortcuts). Stride 1 makes it pointwise.
inline bool is_one_by_one(const Conv2dParams& p) {
  return p.kernel_h == 1 && p.kernel_w == 1 && p.pad_top == 0 && p.pad_left == 0 && p.stride_h >= 1 &&
         p.stride_w >= 1 && p.out_h == (p.in_h - 1) / p.stride_h + 1 && p.out_w == (p.in_w - 1) / p.stride_w + 1;
}

// Max pooling over each (n, c) plane independently; the kernels see the input
// as `planes` = N * C planes of H x W.
struct Pool2dParams {
  int64_t planes;
  int64_t in_h, in_w;
  int64_t out_h, out_w;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dilation_h, dilation_w;

  int64_t in_plane() const { return in_h * in_w; }
  int64_t out_plane() const { return out_h * out_w; }
};

// One axis (height or width) of an average pool. Average pooling is
// separable: the window of output (oh, ow) is rows [start(oh), end(oh)) x
// columns [start(ow), end(ow)), and its divisor is count(oh) * count(ow)
// (unless a divisor override replaces it). This struct is the one place that
// decides those windows, for avg_pool2d (fixed kernel, stride, padding) and
// adaptive_avg_pool2d (start = floor(o*in/out), end = ceil((o+1)*in/out)),
// forward and backward, CPU and CUDA.
struct AvgPoolAxis {
  int64_t in, out;
  int64_t kernel, stride, pad;  // unused when adaptive
  bool adaptive;
  bool count_include_pad;  // avg_pool2d: padded positions count in the divisor

  // Unclipped first position of output o's window (may lie in the padding).
  CNNEXT_HOST_DEVICE int64_t raw_start(int64_t o) const {
    return adaptive ? o * in / out : o * stride - pad;
  }
  // First input position of output o's window, clipped to the input.
  CNNEXT_HOST_DEVICE int64_t start(int64_t o) const {
    const int64_t s = raw_start(o);
    return s < 0 ? 0 : s;
  }
  // One past the last input position of output o's window, clipped to the input.
  CNNEXT_HOST_DEVICE int64_t end(int64_t o) const {
    const int64_t e = adaptive ? ((o + 1) * in + out - 1) / out : o * stride - pad + kernel;
    return e < in ? e : in;
  }
  // Output o's share of the divisor. With count_include_pad, PyTorch counts the
  // window clipped to the padded input (a ceil_mode window hanging past the
  // right padding counts only up to it); otherwise only the input positions.
  CNNEXT_HOST_DEVICE int64_t count(int64_t o) const {
    if (adaptive || !count_include_pad) return end(o) - start(o);
    const int64_t s = raw_start(o);
    const int64_t e = s + kernel < in + pad ? s + kernel : in + pad;
    return e - s;
  }
  // The outputs whose windows contain input position i: [cover_lo(i), cover_hi(i)).
  // Windows move monotonically with o, so they form one range.
  CNNEXT_HOST_DEVICE int64_t cover_lo(int64_t i) const {
    if (adaptive) return i * out / in;
    // smallest o with o*stride - pad + kernel > i
    const int64_t num = i + pad - kernel + 1;
    return num <= 0 ? 0 : (num + stride - 1) / stride;
  }
  CNNEXT_HOST_DEVICE int64_t cover_hi(int64_t i) const {
    // adaptive: ceil((i+1)*out/in); else one past the largest o with o*stride - pad <= i
    const int64_t hi = adaptive ? ((i + 1) * out + in - 1) / in : (i + pad) / stride + 1;
    return hi < out ? hi : out;
  }
};

// avg_pool2d and adaptive_avg_pool2d over `planes` = N * C planes of
// h.in x w.in. divisor_override is 0 when there is none.
struct AvgPool2dParams {
  int64_t planes;
  AvgPoolAxis h, w;
  int64_t divisor_override;

  CNNEXT_HOST_DEVICE int64_t in_plane() const { return h.in * w.in; }
  CNNEXT_HOST_DEVICE int64_t out_plane() const { return h.out * w.out; }
  CNNEXT_HOST_DEVICE int64_t divisor(int64_t oh, int64_t ow) const {
    return divisor_override != 0 ? divisor_override : h.count(oh) * w.count(ow);
  }
};

// a + b and a * b into *out; true when the exact result does not fit in
// int64. (c10/util/safe_numerics.h has int64 overloads only in newer torch
// releases; these builtins are what it uses.)
inline bool add_overflows(int64_t a, int64_t b, int64_t* out) { return __builtin_add_overflow(a, b, out); }
inline bool mul_overflows(int64_t a, int64_t b, int64_t* out) { return __builtin_mul_overflow(a, b, out); }

// ceil(a / b) for a >= 0, b > 0, without forming a + b - 1 (which can
// overflow: padding and stride may each be close to 2^62).
inline int64_t ceil_div_nonneg(int64_t a, int64_t b) { return a / b + (a % b != 0); }

// First tap index k >= 0 with start + k*dilation >= 0: the first tap of a
// window starting at `start` (possibly in the padding) that is not before the input.
inline int64_t first_inside(int64_t start, int64_t dilation) {
  return start >= 0 ? 0 : ceil_div_nonneg(-start, dilation);
}

// PyTorch's max-pool index of a window at (h0, w0) that takes no tap (it holds only the lowest value):
// its first in-bounds row and column, also when their crossing is not in-bounds at all.
inline int64_t window_first_index(const Pool2dParams& p, int64_t h0, int64_t w0) {
  return (h0 + first_inside(h0, p.dilation_h) * p.dilation_h) * p.in_w + w0 +
         first_inside(w0, p.dilation_w) * p.dilation_w;
}

// Output positions whose kernel tap `k` lands inside [0, in_size):
// the half-open range [lo, hi) of o with 0 <= o*stride - pad + k*dilation < in_size.
// Kernels use it to run their inner loops over the interior without bounds checks.
struct TapRange {
  int64_t lo, hi;
};

// The op's checks keep k*dilation (< the dilated kernel) and in_size + pad
// (< the padded input) within int64, and so every value formed here.
inline TapRange valid_outputs(int64_t k, int64_t in_size, int64_t out_size,
                              int64_t stride, int64_t pad, int64_t dilation) {
  const int64_t offset = k * dilation - pad;  // input index of o = 0
  // smallest o with o*stride + offset >= 0
  int64_t lo = offset >= 0 ? 0 : ceil_div_nonneg(-offset, stride);
  // smallest o with o*stride + offset >= in_size
  int64_t hi = in_size - offset <= 0 ? 0 : ceil_div_nonneg(in_size - offset, stride);
  if (lo > out_size) lo = out_size;
  if (hi > out_size) hi = out_size;
  if (hi < lo) hi = lo;
  return {lo, hi};
}

}  // namespace cnnext
