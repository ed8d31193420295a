// im2col + GEMM convolution on channels_last tensors (groups 1, floating types).
//
// In NHWC the input is a (N*H*W, C_in) matrix and the output a
// (N*OH*OW, C_out) one, so each pass is a GEMM over the pixels with no
// transposes: the column matrix has a row per output pixel (its window, tap
// by tap, C_in values each; im2col.h), and with the weight reordered to
// (C_out, KH*KW*C_in) (taps outer, as the columns),
//   y (P x C_out) = col (P x K) * W^T,  dcol = dy * W (added back by
//   col2im_nhwc_add),  dW += dy^T * col.
// A pointwise convolution's column matrix is the input itself. The pixels are
// cut into blocks fixed by the shape and every GEMM runs single-threaded in
// tasks fixed by the shape (gemm_tasks.h), so that the results do not depend
// on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "cache_budget.h"
#include "conv2d_kernels.h"
#include "gemm_tasks.h"
#include "im2col.h"
#include "kernel_utils.h"

namespace cnnext {
namespace cpu {
namespace {

using namespace gemm_tasks;

// Most pixels per block: enough for the GEMM to run at speed.
constexpr int64_t kMaxPixelBlock = 2048;
// Fewest output channels of a tile (forward, pointwise grad_input): the GEMM's narrow side.
constexpr int64_t kWideTile = 128;
// Elements of a dW small enough to keep one partial sum per BatchChunk.
constexpr int64_t kSmallWeight = 1 << 16;

// Pixels per block, for column rows of `row_bytes`: within `budget` (cache_budget.h).
int64_t pixel_block(int64_t row_bytes, int64_t budget = kColumnBlockBytes) {
  return std::clamp<int64_t>(budget / std::max<int64_t>(1, row_bytes), kMinGemmColumns, kMaxPixelBlock);
}

// Pixels per block of a pass whose GEMMs are cut into blocks of pixels only where the blocks are
// too few (forward; a pointwise grad_input): as many as the budget allows, but few enough for
// kTargetTasks blocks, down to kMinGemmColumns.
int64_t task_pixel_block(int64_t pixels, int64_t row_bytes) {
  return std::min(pixel_block(row_bytes), std::max(kMinGemmColumns, ceil_div(pixels, kTargetTasks)));
}

// Pixels per block of grad_weight: columns it builds stay within kColumnBandBytes, so that the GEMM
// right after reads them from L2 (a pointwise layer's columns are the input itself).
int64_t grad_weight_block(const Conv2dParams& p, int64_t row_bytes) {
  return pixel_block(row_bytes, is_pointwise(p) ? kColumnBlockBytes : kColumnBandBytes);
}

// The (N*H*W, C) view of a channels_last-contiguous tensor.
at::Tensor pixel_matrix(const at::Tensor& t) { return t.permute({0, 2, 3, 1}).view({-1, t.size(1)}); }

// A channels_last weight (or its gradient, which the GEMMs write through this view) as
// (C_out, KH*KW*C_in), in the columns' order.
at::Tensor tap_major(const at::Tensor& weight) { return weight.permute({0, 2, 3, 1}).view({weight.size(0), -1}); }

// The columns of pixels px, taps ts, as (px.size(), ts.size() * C_in): for a
// pointwise convolution rows of the input itself, otherwise built in `col`.
template <typename T>
at::Tensor columns(const Conv2dParams& p, const at::Tensor& input, Range px, Range ts, at::Tensor& col) {
  if (is_pointwise(p)) return pixel_matrix(input).narrow(0, px.begin, px.size());
  im2col_nhwc(p, input.const_data_ptr<T>(), px.begin, px.end, ts.begin, ts.end, col.mutable_data_ptr<T>(),
              col.stride(0));
  return col.narrow(0, 0, px.size()).narrow(1, 0, ts.size() * p.in_channels);
}

}  // namespace

bool im2col_nhwc(const Conv2dParams& p, const at::Tensor& a, const at::Tensor& b) {
  return p.groups == 1 && a.is_contiguous(at::MemoryFormat::ChannelsLast) &&
         b.is_contiguous(at::MemoryFormat::ChannelsLast);
}

void im2col_nhwc_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, at::Tensor& output) {
  // Tasks: (pixel block, tile of output channels), tiles only where the blocks are too few.
  const int64_t pixels = p.batch * p.out_plane(), K = p.col_rows();
  // Blocks of pixels first (each GEMM keeps every output channel: its narrow side); output channels
  // are cut only where the blocks are too few and the tiles stay kWideTile wide.
  const int64_t P = task_pixel_block(pixels, K * input.element_size());
  const int64_t blocks = ceil_div(pixels, P);
  const int64_t tiles = tiles_for(blocks, p.out_channels, kWideTile);
  const at::Tensor w = tap_major(weight);
  at::Tensor y = pixel_matrix(output);  // a view: output is channels_last
  const Range all_taps{0, p.kernel_plane()};
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cnnext_im2col_nhwc_forward", [&] {
    parallel_gemms(blocks * tiles, [&](int64_t begin, int64_t end) {
      at::Tensor col = is_pointwise(p) ? at::Tensor() : at::empty({P, K}, input.options());
      at::Tensor cols;
      int64_t built = -1;  // the block whose columns `cols` holds
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / tiles;
        const Range px{b * P, std::min(pixels, (b + 1) * P)}, outs = part(p.out_channels, tiles, task % tiles);
        if (built != b) {
          cols = columns<scalar_t>(p, input, px, all_taps, col);
          built = b;
        }
        at::Tensor out = y.narrow(0, px.begin, px.size()).narrow(1, outs.begin, outs.size());
        const at::Tensor wt = w.narrow(0, outs.begin, outs.size()).t();
        if (bias.defined()) {
          at::addmm_out(out, bias.narrow(0, outs.begin, outs.size()).unsqueeze(0), cols, wt);
        } else {
          at::mm_out(out, cols, wt);
        }
      }
    });
  });
}

void im2col_nhwc_grad_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                            at::Tensor& grad_input) {
  const int64_t pixels = p.batch * p.out_plane(), L = p.out_plane(), K = p.col_rows();
  const at::Tensor w = tap_major(weight), dy = pixel_matrix(grad_output);
  at::Tensor dx = pixel_matrix(grad_input);
  if (is_pointwise(p)) {
    // The column gradient is the input gradient: one GEMM per task, cut as forward's (a 7 x 7
    // layer's batch of 8 is one block of pixels, which one thread ran alone).
    const int64_t P = task_pixel_block(pixels, K * grad_output.element_size()), blocks = ceil_div(pixels, P);
    const int64_t tiles = tiles_for(blocks, p.in_channels, kWideTile);
    parallel_gemms(blocks * tiles, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / tiles;
        const Range px{b * P, std::min(pixels, (b + 1) * P)}, ins = part(p.in_channels, tiles, task % tiles);
        at::Tensor out = dx.narrow(0, px.begin, px.size()).narrow(1, ins.begin, ins.size());
        at::mm_out(out, dy.narrow(0, px.begin, px.size()), w.narrow(1, ins.begin, ins.size()));
      }
    });
    return;
  }
  const int64_t P = pixel_block(K * grad_output.element_size());
  // The windows of neighbouring pixels overlap, so each task owns whole samples of grad_input: a
  // block of them (SampleBlocks), whose pixels' column gradients one GEMM computes, or, where a
  // sample's columns exceed the budget, one sample in GEMMs of P pixels.
  const SampleBlocks blocks(p.batch, L, K * L * grad_output.element_size());
  const int64_t rows = std::min(P, blocks.size * L);
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_im2col_nhwc_grad_input", [&] {
    parallel_gemms(blocks.count, [&](int64_t begin, int64_t end) {
      at::Tensor dcol = at::empty({rows, K}, grad_output.options());
      scalar_t* dx_data = grad_input.mutable_data_ptr<scalar_t>();
      for (int64_t b = begin; b < end; ++b) {
        const int64_t n = blocks.first(b), end_n = n + blocks.samples(b), last = end_n * L;
        std::fill(dx_data + n * p.in_plane() * p.in_channels, dx_data + end_n * p.in_plane() * p.in_channels,
                  scalar_t(0));
        for (int64_t first = n * L; first < last; first += rows) {
          const Range px{first, std::min(last, first + rows)};
          at::Tensor d = dcol.narrow(0, 0, px.size());
          at::mm_out(d, dy.narrow(0, px.begin, px.size()), w);
          col2im_nhwc_add(p, d.const_data_ptr<scalar_t>(), K, px.begin, px.end, dx_data);
        }
      }
    });
  });
}

void im2col_nhwc_grad_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                             at::Tensor& grad_weight, at::Tensor& grad_bias) {
  const int64_t pixels = p.batch * p.out_plane(), C = p.in_channels, taps = p.kernel_plane(), K = taps * C;
  at::Tensor dw_taps = tap_major(grad_weight);
  const at::Tensor dy = pixel_matrix(grad_output);
  if (p.out_channels * K <= kSmallWeight) {
    // A small dW: cut into tiles it would give too few tasks. The batch is cut into BatchChunks
    // instead, each with partial sums over whole rows, added in chunk order.
    const BatchChunks chunking(p.batch);
    const int64_t chunks = chunking.count, L = p.out_plane(), P = grad_weight_block(p, K * input.element_size());
    at::Tensor partials = at::empty({chunks, p.out_channels, K}, grad_output.options());
    at::Tensor bias_partials = at::empty({chunks, p.out_channels}, grad_output.options());
    AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_im2col_nhwc_grad_weight", [&] {
      parallel_gemms(chunks, [&](int64_t begin, int64_t end) {
        at::Tensor col = is_pointwise(p) ? at::Tensor() : at::empty({P, K}, input.options());
        for (int64_t chunk = begin; chunk < end; ++chunk) {
          at::Tensor dw = partials.select(0, chunk), db = bias_partials.select(0, chunk);
          const int64_t first = chunking.begin(chunk) * L, last = chunking.begin(chunk + 1) * L;
          for (int64_t q = first; q < last; q += P) {
            const Range px{q, std::min(last, q + P)};
            const at::Tensor cols = columns<scalar_t>(p, input, px, {0, taps}, col);
            const at::Tensor gy = dy.narrow(0, px.begin, px.size());
            if (q == first) {
              at::mm_out(dw, gy.t(), cols);
              if (grad_bias.defined()) at::sum_out(db, gy, 0);
            } else {
              dw.addmm_(gy.t(), cols);
              if (grad_bias.defined()) db.add_(gy.sum(0));
            }
          }
        }
      });
    });
    dw_taps.copy_(partials.sum(0));
    if (grad_bias.defined()) grad_bias.copy_(bias_partials.sum(0));
    return;
  }
  // Tiles of dW (output channels x taps); each task reduces its tile over every pixel, block after
  // block, and the tasks of the first taps also sum their channels' grad_bias.
  const int64_t tap_tiles = std::min(taps, kTargetTasks);
  const int64_t out_tiles = tiles_for(tap_tiles, p.out_channels, kMinTileRows);
  const int64_t max_taps = ceil_div(taps, tap_tiles);
  const int64_t P = grad_weight_block(p, max_taps * C * input.element_size());
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_im2col_nhwc_grad_weight", [&] {
    parallel_gemms(out_tiles * tap_tiles, [&](int64_t begin, int64_t end) {
      at::Tensor col = is_pointwise(p) ? at::Tensor() : at::empty({P, max_taps * C}, input.options());
      for (int64_t task = begin; task < end; ++task) {
        const Range outs = part(p.out_channels, out_tiles, task / tap_tiles), ts = part(taps, tap_tiles, task % tap_tiles);
        at::Tensor dw = dw_taps.narrow(0, outs.begin, outs.size()).narrow(1, ts.begin * C, ts.size() * C);
        const bool sums_bias = grad_bias.defined() && ts.begin == 0;
        at::Tensor db = sums_bias ? grad_bias.narrow(0, outs.begin, outs.size()) : at::Tensor();
        for (int64_t first = 0; first < pixels; first += P) {
          const Range px{first, std::min(pixels, first + P)};
          const at::Tensor cols = columns<scalar_t>(p, input, px, ts, col);
          const at::Tensor gy = dy.narrow(0, px.begin, px.size()).narrow(1, outs.begin, outs.size());
          if (first == 0) {
            at::mm_out(dw, gy.t(), cols);
            if (sums_bias) at::sum_out(db, gy, 0);
          } else {
            dw.addmm_(gy.t(), cols);
            if (sums_bias) db.add_(gy.sum(0));
          }
        }
      }
    });
  });
}

}  // namespace cpu
}  // namespace cnnext
