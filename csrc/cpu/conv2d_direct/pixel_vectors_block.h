// Pixel vectors, one output row at a time (any stride): each step computes
// oc_block output channels x one vector of output pixels of one row in
// registers while it walks the reduction (input channel, kernel row, kernel
// column), so every input load feeds oc_block FMAs. The fallback of the
// pixel-vector families: strided layers, and gathered (far apart) windows.
#pragma once

#include <algorithm>

#include "../vec.h"
#include "geometry.h"

namespace cnnext {
namespace cpu {
namespace {

// out[j][oh][ow] = bias[j] + sum_{c,kh,kw} w[c][kh][kw][j] * staged[c][oh*sh + kh*dh][ow*sw + kw*dw]
// for the first `valid` of oc_block channels; `w` is packed block-major (pack.h).
template <typename T, class Arch, bool kUnitStride>
void correlate_block(const Correlation& c, const T* staged, const T* w, const T* bias, int64_t valid, T* out,
                     int64_t out_plane) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>, kOcBlock = Arch::kTiles.oc_block;
  const int64_t cols = c.staging.cols;
  const int64_t taps = c.kernel_h * c.kernel_w;
  for (int64_t oh = 0; oh < c.out_h; ++oh) {
    for (int64_t ow0 = 0; ow0 < c.out_w; ow0 += V) {
      Vec<T, B> acc[kOcBlock] = {};
      for (int64_t ch = 0; ch < c.channels; ++ch) {
        const T* plane = staged + ch * c.staging.rows * cols;
        const T* wc = w + ch * taps * kOcBlock;
        for (int64_t kh = 0; kh < c.kernel_h; ++kh) {
          const T* row = plane + (oh * c.stride_h + kh * c.dilation_h) * cols + ow0 * c.stride_w;
          for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
            const T* x = row + kw * c.dilation_w;
            const T* wk = wc + (kh * c.kernel_w + kw) * kOcBlock;
            const Vec<T, B> xv = kUnitStride ? load_vec<B>(x) : load_strided<B>(x, c.stride_w);
            CNNEXT_UNROLL
            for (int64_t j = 0; j < kOcBlock; ++j) acc[j] += wk[j] * xv;
          }
        }
      }
      const int64_t nv = std::min(V, c.out_w - ow0);
      for (int64_t j = 0; j < valid; ++j) {
        T* dst = out + j * out_plane + oh * c.out_w + ow0;
        const T b = bias ? bias[j] : T(0);
        for (int64_t v = 0; v < nv; ++v) dst[v] = acc[j][v] + b;
      }
    }
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
