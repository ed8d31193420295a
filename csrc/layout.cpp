#include "layout.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace cnnext {
namespace {

// Elements of a tile's side: a tile of 8-byte elements is 8 KB, in L1 with its transpose.
constexpr int64_t kTile = 32;

// dst (cols x rows) = src (rows x cols) transposed, for `batch` such matrices, in tiles.
template <typename E>
void transpose_matrices(const E* src, E* dst, int64_t batch, int64_t rows, int64_t cols) {
  const int64_t tile_rows = (rows + kTile - 1) / kTile, tile_cols = (cols + kTile - 1) / kTile;
  const int64_t tiles = tile_rows * tile_cols;
  at::parallel_for(0, batch * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / tiles, r0 = i % tiles / tile_cols * kTile, c0 = i % tile_cols * kTile;
      const E* s = src + n * rows * cols;
      E* d = dst + n * rows * cols;
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) d[c * rows + r] = s[r * cols + c];
    }
  });
}

}  // namespace

at::Tensor contiguous_as(const at::Tensor& t, at::MemoryFormat format) {
  if (t.is_contiguous(format)) return t;
  const bool to_nhwc = format == at::MemoryFormat::ChannelsLast && t.is_contiguous();
  const bool to_nchw = format == at::MemoryFormat::Contiguous && t.dim() == 4 &&
                       t.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (!t.is_cpu() || t.dim() != 4 || !(to_nhwc || to_nchw) || t.is_conj() || t.is_neg()) return t.contiguous(format);
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(format));
  // Per sample, NCHW is a (C, H*W) matrix and channels_last its transpose.
  const int64_t batch = t.size(0), channels = t.size(1), plane = t.size(2) * t.size(3);
  const int64_t rows = to_nhwc ? channels : plane, cols = to_nhwc ? plane : channels;
  switch (t.element_size()) {
    case 1:
      transpose_matrices(static_cast<const uint8_t*>(t.const_data_ptr()), static_cast<uint8_t*>(out.mutable_data_ptr()),
                         batch, rows, cols);
      break;
    case 2:
      transpose_matrices(static_cast<const uint16_t*>(t.const_data_ptr()),
                         static_cast<uint16_t*>(out.mutable_data_ptr()), batch, rows, cols);
      break;
    case 4:
      transpose_matrices(static_cast<const uint32_t*>(t.const_data_ptr()),
                         static_cast<uint32_t*>(out.mutable_data_ptr()), batch, rows, cols);
      break;
    case 8:
      transpose_matrices(static_cast<const uint64_t*>(t.const_data_ptr()),
                         static_cast<uint64_t*>(out.mutable_data_ptr()), batch, rows, cols);
      break;
    default:
      return t.contiguous(format);
  }
  return out;
}

}  // namespace cnnext
