// grad_weight with pixel vectors: per step, one block of oc_block output
// channels x up to three neighbouring kernel columns, reduced along output
// rows over several samples. The kTaps input vectors are loaded once per step
// and each feeds oc_block FMAs, each grad_output vector feeds kTaps; the sum
// runs over several samples so that it is long enough to pay for the final
// horizontal additions.
#pragma once

#include <algorithm>

#include "../vec.h"
#include "geometry.h"

namespace cnnext {
namespace cpu {
namespace {

// How grad_weight reads grad_output rows, and keeps a row's last vector to
// the row's outputs.
enum class GyRows {
  // Copied into rows padded with zeros to whole vectors: the padding lanes
  // multiply inputs past the row's end by zero. Only for finite inputs.
  kCopied,
  // The same, and those input lanes cleared as well, since 0 * inf = NaN.
  // Clearing costs time on the middle layers, so finite inputs skip it.
  kCopiedMasked,
  // In place: the last vector is moved back to end at out_w, and the lanes
  // it shares with the vector before are cleared in both operands.
  kInPlace,
};

// Operands of grad_weight for a few samples of one group: the staged input
// planes, and grad_output of one block of oc_block channels, either in place
// (whole blocks only) or copied into rows padded to a multiple of the vector
// and channels padded to whole blocks, zeros in the padding.
template <typename T>
struct WeightGradBatch {
  const T* staged;
  int64_t staged_sample;  // elements per sample
  const T* gy;            // first channel of the block, first sample
  int64_t gy_sample;      // elements between samples
  int64_t gy_plane;       // elements between channels
  int64_t gy_cols;        // elements between rows
  int64_t samples;
};

// partial[j][ch][kh][kw0 + k] += sum_{s,oh,ow} gy[s][j][oh][ow] * staged[s][ch][oh*sh + kh*dh][ow*sw + (kw0+k)*dw]
// for one block of oc_block output channels and kTaps neighbouring kernel
// columns, for every ch and kh. Vectors run along output rows; see GyRows
// for how a row's last vector is kept to the row's outputs.
template <typename T, class Arch, bool kUnitStride, int64_t kTaps, GyRows kRows>
void weight_grad_block(const Correlation& c, const WeightGradBatch<T>& b, int64_t valid, int64_t kw0, T* partial) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>, kOcBlock = Arch::kTiles.oc_block;
  const int64_t cols = c.staging.cols;
  const int64_t taps = c.kernel_h * c.kernel_w;
  const int64_t last = (c.out_w - 1) / V * V;  // ow0 of a row's last vector
  constexpr bool kInPlace = kRows == GyRows::kInPlace;
  // Locals, not loads through `b` on every row: the row loop is most of the work on 5 - 14-pixel rows.
  const int64_t gy_plane = b.gy_plane, gy_cols = b.gy_cols, gy_sample = b.gy_sample;
  const int64_t staged_sample = b.staged_sample, samples = b.samples;
  const int64_t x_step = c.stride_w;
  const Bits<T, B> last_keep =
      kInPlace ? lane_mask<T, B>(V - (c.out_w - last), V) : lane_mask<T, B>(0, c.out_w - last);
  for (int64_t ch = 0; ch < c.channels; ++ch) {
    for (int64_t kh = 0; kh < c.kernel_h; ++kh) {
      Vec<T, B> acc[kOcBlock][kTaps] = {};
      for (int64_t s = 0; s < samples; ++s) {
        const T* plane = b.staged + s * staged_sample + ch * c.staging.rows * cols;
        for (int64_t oh = 0; oh < c.out_h; ++oh) {
          const T* row = plane + (oh * c.stride_h + kh * c.dilation_h) * cols + kw0 * c.dilation_w;
          const T* g = b.gy + s * gy_sample + oh * gy_cols;
          // The row's vectors, the last one apart: only it needs its lanes kept to the row.
          const auto step = [&](int64_t start, auto tail) {
            constexpr bool kTail = decltype(tail)::value;
            Vec<T, B> xv[kTaps];
            CNNEXT_UNROLL
            for (int64_t k = 0; k < kTaps; ++k) {
              const T* x = row + k * c.dilation_w;
              xv[k] = kUnitStride ? load_vec<B>(x + start) : load_strided<B>(x + start * x_step, x_step);
              if constexpr (kRows != GyRows::kCopied && kTail) xv[k] = keep_lanes<T, B>(xv[k], last_keep);
            }
            CNNEXT_UNROLL
            for (int64_t j = 0; j < kOcBlock; ++j) {
              Vec<T, B> gv = load_vec<B>(g + j * gy_plane + start);
              if constexpr (kInPlace && kTail) {
                gv = keep_lanes<T, B>(gv, last_keep);
              } else {
                keep_in_register<T, B>(gv);
              }
              CNNEXT_UNROLL
              for (int64_t k = 0; k < kTaps; ++k) acc[j][k] += gv * xv[k];
            }
          };
          for (int64_t ow0 = 0; ow0 < last; ow0 += V) step(ow0, std::false_type());
          step(kInPlace ? c.out_w - V : last, std::true_type());
        }
      }
      for (int64_t j = 0; j < valid; ++j) {
        CNNEXT_UNROLL
        for (int64_t k = 0; k < kTaps; ++k) {
          T sum = 0;
          for (int64_t v = 0; v < V; ++v) sum += acc[j][k][v];
          partial[(j * c.channels + ch) * taps + kh * c.kernel_w + kw0 + k] += sum;
        }
      }
    }
  }
}

// dst[r][0:width] = src[r][0:width] for `rows` rows of `width` elements, into
// rows `dst_cols` apart. Rows are short (11 - 28 elements): a memcpy call per
// row cost more than grad_weight's FMAs on the first layers.
template <typename T, class Arch>
void copy_rows(const T* src, int64_t rows, int64_t width, T* dst, int64_t dst_cols) {
  for (int64_t r = 0; r < rows; ++r, src += width, dst += dst_cols) {
    transform_row<Arch::kTiles.vec_bytes>(src, width, dst, [](auto v) { return v; });
  }
}

// All kernel columns of one block, up to three at a time (oc_block x 3 accumulators).
template <typename T, class Arch, GyRows kRows>
void weight_grad_columns(const Correlation& c, const WeightGradBatch<T>& b, int64_t valid, T* partial) {
  const auto columns = [&](auto unit_stride) {
    constexpr bool kUnit = decltype(unit_stride)::value;
    for (int64_t kw0 = 0; kw0 < c.kernel_w; kw0 += 3) {
      switch (std::min<int64_t>(3, c.kernel_w - kw0)) {
        case 3:
          weight_grad_block<T, Arch, kUnit, 3, kRows>(c, b, valid, kw0, partial);
          break;
        case 2:
          weight_grad_block<T, Arch, kUnit, 2, kRows>(c, b, valid, kw0, partial);
          break;
        default:
          weight_grad_block<T, Arch, kUnit, 1, kRows>(c, b, valid, kw0, partial);
      }
    }
  };
  if (c.stride_w == 1) {
    columns(std::true_type());
  } else {
    columns(std::false_type());
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
