// im2col + GEMM convolution on the CPU.
//
// For one sample and group, im2col lays every receptive field out as a
// column: col[(c, kh, kw)][(oh, ow)] = x[c][oh*sh - pt + kh*dh][ow*sw - pl + kw*dw]
// (zero outside the input). The convolution is then the GEMM
//   y (C_out/g x OH*OW) = W (C_out/g x K) * col (K x OH*OW),
// and its gradients are two more GEMMs, dcol = W^T * dy (scattered back by
// col2im) and dW += dy * col^T. Small planes give GEMMs too thin to run fast
// (a 7 x 7 plane has 49 output pixels), so the columns of a block of samples
// sit side by side in one buffer, (K, S * OH*OW), and each GEMM covers S
// samples; y and dy then pass through a (rows, S * OH*OW) buffer, since NCHW
// keeps a sample's channels together.
//
// Work is cut into tasks fixed by the shape alone (Blocking), each running
// single-threaded GEMMs on a slice of the result, so that the results do not
// depend on the thread count: forward and grad_input cut the batch into
// sample blocks and, where that gives too few tasks (large layers on small
// planes), the result's channels into tiles; grad_weight cuts dW into tiles
// of (output channels x input channels), each reducing over the whole batch
// in a fixed order, so no partial sums are kept.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <vector>

#include "cache_budget.h"
#include "conv2d_kernels.h"
#include "gemm_tasks.h"
#include "im2col.h"
#include "kernel_utils.h"

namespace cnnext {
namespace cpu {
namespace {

using namespace gemm_tasks;


// The (C_out/g, K) weight matrix of group g.
at::Tensor weight_matrix(const Conv2dParams& p, const at::Tensor& weight, int64_t g) {
  return weight.view({p.groups, p.out_per_group(), p.col_rows()}).select(0, g);
}

// Samples [n, n + count), channels [c.begin, c.end) of group g, of an NCHW tensor.
at::Tensor slice(const at::Tensor& t, int64_t groups, int64_t n, int64_t count, int64_t g, Range c) {
  return t.narrow(0, n, count).narrow(1, g * (t.size(1) / groups) + c.begin, c.size());
}

// The GEMM operand for samples [n, n + count), channels c of group g of t, as
// (c.size(), count * H*W). t is the input (NCHW), or an output or grad_output,
// which may be channels_last (conv2d_kernels.h). A channels_last operand is a
// view (its pixels are rows of channels, evenly spaced: a transposed matrix),
// as is an NCHW one of one sample; for more samples of an NCHW t it is
// `buffer` (holding at least that much), filled from t if `fill`.
at::Tensor gemm_operand(const at::Tensor& t, int64_t groups, int64_t n, int64_t count, int64_t g, Range c,
                        at::Tensor& buffer, bool fill) {
  const int64_t plane = t.size(2) * t.size(3);
  if (!t.is_contiguous()) {
    return t.permute({0, 2, 3, 1})
        .view({-1, t.size(1)})
        .narrow(0, n * plane, count * plane)
        .narrow(1, g * (t.size(1) / groups) + c.begin, c.size())
        .t();
  }
  const at::Tensor s = slice(t, groups, n, count, g, c);
  if (count == 1) return s.view({c.size(), plane});
  at::Tensor m = buffer.narrow(0, 0, c.size()).narrow(1, 0, count * plane);
  if (fill) m.view({c.size(), count, t.size(2), t.size(3)}).copy_(s.transpose(0, 1));
  return m;
}

// Writes a GEMM result made by gemm_operand(..., fill=false) back into t,
// unless it already is a view of t.
void scatter_operand(const at::Tensor& m, at::Tensor& t, int64_t groups, int64_t n, int64_t count, int64_t g,
                     Range c) {
  if (count == 1 || !t.is_contiguous()) return;
  slice(t, groups, n, count, g, c).transpose(0, 1).copy_(m.view({c.size(), count, t.size(2), t.size(3)}));
}

// Output rows shorter than this take the gather through padded planes
// (im2col.h); longer ones im2col's row copies (RESULTS.md has both).
constexpr int64_t kShortRows = 12;
bool gathers(const Conv2dParams& p) { return p.out_w < kShortRows; }

// The gather's offsets (im2col.h), for every thread of a call; empty where the rows are copied.
std::vector<int64_t> column_offsets(const Conv2dParams& p) {
  std::vector<int64_t> offsets(gathers(p) && !is_pointwise(p) ? p.out_plane() : 0);
  if (!offsets.empty()) gather_offsets(p, PaddedPlanes(p), offsets.data());
  return offsets;
}

// One thread's builder of column matrices, and of their adjoint for grad_input.
template <typename T>
class ColumnBuilder {
 public:
  // max_rows: the most kernel rows (im2col.h) one build takes.
  ColumnBuilder(const Conv2dParams& p, const std::vector<int64_t>& offsets, int64_t max_rows)
      : p_(p),
        planes_(p),
        offsets_(offsets.data()),
        padded_(offsets.empty() ? 0 : (ceil_div(max_rows, p.kernel_h) + 1) * planes_.plane()) {}

  // The columns of kernel rows `rows` (im2col.h) of samples [n, n + count),
  // group g, as (rows.size() * KW, count * L): for a pointwise convolution
  // (params.h) the input itself (gemm_operand); otherwise built in `col`.
  at::Tensor build(const at::Tensor& input, int64_t n, int64_t count, int64_t g, Range rows, at::Tensor& col) {
    if (is_pointwise(p_)) return gemm_operand(input, p_.groups, n, count, g, rows, col, /*fill=*/true);
    const int64_t L = p_.out_plane(), ld = col.size(1);
    const at::Tensor x = slice(input, p_.groups, n, count, g, {0, p_.in_per_group()});
    for (int64_t s = 0; s < count; ++s) {
      const T* sample = x.select(0, s).const_data_ptr<T>();
      T* out = col.mutable_data_ptr<T>() + s * L;
      if (padded_.empty()) {
        im2col(p_, sample, out, ld, rows.begin, rows.end);
      } else {
        pad_planes(p_, planes_, sample, padded_.data(), rows.begin / p_.kernel_h, ceil_div(rows.end, p_.kernel_h));
        im2col_gather(p_, planes_, padded_.data(), offsets_, out, ld, rows.begin, rows.end);
      }
    }
    return col.narrow(0, 0, rows.size() * p_.kernel_w).narrow(1, 0, count * L);
  }

  // The columns of output rows [oh, oh + rows) of sample n, group g, every kernel row, as
  // (col_rows, rows * OW), built in `col` by copying rows (not for gathered or pointwise columns).
  at::Tensor build_rows(const at::Tensor& input, int64_t n, int64_t g, int64_t oh, int64_t rows, at::Tensor& col) {
    const Conv2dParams band = tile_params(p_, oh, rows, 0, p_.out_w);
    const T* x = slice(input, p_.groups, n, 1, g, {0, p_.in_per_group()}).const_data_ptr<T>();
    im2col(band, x, col.mutable_data_ptr<T>(), band.out_plane(), 0, p_.in_per_group() * p_.kernel_h);
    return col.view(-1).narrow(0, 0, p_.col_rows() * band.out_plane()).view({p_.col_rows(), band.out_plane()});
  }

  // grad_input's channels c of one sample's group (x: its first channel) from the
  // column gradient of those channels (rows ld apart).
  void scatter(const T* dcol, int64_t ld, T* x, Range c) {
    if (padded_.empty()) return col2im(p_, dcol, ld, x, c.begin, c.end);
    col2im_scatter(p_, planes_, dcol, ld, offsets_, padded_.data(), x, c.begin, c.end);
  }

 private:
  const Conv2dParams& p_;
  const PaddedPlanes planes_;
  const int64_t* offsets_;
  std::vector<T> padded_;
};

// Forward and grad_input: tasks (sample block, group, tile of the result's
// channels), in that order, so that a thread running consecutive tasks of one
// block builds its operand once.
struct CorrelationTasks {
  SampleBlocks blocks;
  int64_t groups, tiles, channels;  // tiles of `channels` result channels per group
  CorrelationTasks(const Conv2dParams& p, int64_t channels, int64_t min_rows, int64_t element_size)
      : blocks(p.batch, p.out_plane(), p.col_rows() * p.out_plane() * element_size),
        groups(p.groups),
        tiles(tiles_for(blocks.count * p.groups, channels, min_rows)),
        channels(channels) {}
  int64_t count() const { return blocks.count * groups * tiles; }
  int64_t block(int64_t task) const { return task / (groups * tiles); }
  int64_t group(int64_t task) const { return task / tiles % groups; }
  Range tile(int64_t task) const { return part(channels, tiles, task % tiles); }
};

// grad_weight of a layer whose weight is small (first layers): dW cut into tiles would give too
// few tasks, each streaming all of grad_output for a few columns. The batch is cut into
// BatchChunks instead, each with a partial dW over whole columns, summed in chunk order.
constexpr int64_t kSmallWeight = 1 << 16;  // elements of one group's dW

// Output rows per GEMM of grad_weight_by_chunks on a plane of its own (blocks of one sample):
// bands whose columns fit kColumnBandBytes, of at least kMinGemmColumns pixels; the whole plane
// where it fits, or where the columns are gathered or are the input itself.
int64_t band_rows(const Conv2dParams& p, int64_t element_size) {
  if (gathers(p) || is_pointwise(p)) return p.out_h;
  const int64_t fit = kColumnBandBytes / std::max<int64_t>(1, p.col_rows() * p.out_w * element_size);
  return std::clamp<int64_t>(std::max(fit, ceil_div(kMinGemmColumns, p.out_w)), 1, p.out_h);
}

void grad_weight_by_chunks(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                           at::Tensor& grad_weight) {
  const BatchChunks chunking(p.batch);
  const int64_t chunks = chunking.count, L = p.out_plane();
  const Range all_rows{0, p.in_per_group() * p.kernel_h}, all_out{0, p.out_per_group()};
  const SampleBlocks blocks(chunking.max_size(), L, p.col_rows() * L * input.element_size());
  const int64_t S = blocks.size, band = S == 1 ? band_rows(p, input.element_size()) : p.out_h;
  at::Tensor partials = at::empty({chunks, p.groups, p.out_per_group(), p.col_rows()}, grad_output.options());
  const std::vector<int64_t> offsets = column_offsets(p);
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_im2col_grad_weight", [&] {
    parallel_gemms(chunks, [&](int64_t begin, int64_t end) {
      ColumnBuilder<scalar_t> builder(p, offsets, all_rows.size());
      at::Tensor col = at::empty({p.col_rows(), band < p.out_h ? band * p.out_w : S * L}, input.options());
      at::Tensor dy_buffer = at::empty({p.out_per_group(), S * L}, grad_output.options());
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t first = chunking.begin(chunk), last = chunking.begin(chunk + 1);
        for (int64_t g = 0; g < p.groups; ++g) {
          at::Tensor dw = partials.select(0, chunk).select(0, g);
          bool started = false;
          const auto reduce = [&](const at::Tensor& dy, const at::Tensor& cols) {
            if (started) {
              dw.addmm_(dy, cols.t());
            } else {
              at::mm_out(dw, dy, cols.t());
              started = true;
            }
          };
          for (int64_t n = first; n < last; n += S) {
            const int64_t count = std::min(S, last - n);
            const at::Tensor dy = gemm_operand(grad_output, p.groups, n, count, g, all_out, dy_buffer, /*fill=*/true);
            if (band < p.out_h) {  // S == 1: a plane of its own
              for (int64_t oh = 0; oh < p.out_h; oh += band) {
                const int64_t rows = std::min(band, p.out_h - oh);
                reduce(dy.narrow(1, oh * p.out_w, rows * p.out_w), builder.build_rows(input, n, g, oh, rows, col));
              }
            } else {
              reduce(dy, builder.build(input, n, count, g, all_rows, col));
            }
          }
        }
      }
    });
  });
  at::Tensor flat = grad_weight.view({1, -1});
  at::sum_out(flat, partials.view({chunks, -1}), 0, /*keepdim=*/true);
}

}  // namespace

void im2col_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    at::Tensor& output) {
  const CorrelationTasks tasks(p, p.out_per_group(), kMinTileRows, input.element_size());
  const int64_t S = tasks.blocks.size, L = p.out_plane();
  const Range all_in{0, p.in_per_group() * p.kernel_h};
  const std::vector<int64_t> offsets = column_offsets(p);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cnnext_im2col_forward", [&] {
    parallel_gemms(tasks.count(), [&](int64_t begin, int64_t end) {
      ColumnBuilder<scalar_t> builder(p, offsets, all_in.size());
      at::Tensor col = at::empty({p.col_rows(), S * L}, input.options());
      at::Tensor y_buffer = at::empty({p.out_per_group(), S * L}, input.options());
      at::Tensor cols;
      int64_t built = -1;  // the (block, group) whose columns `cols` holds
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = tasks.block(task), g = tasks.group(task), n = tasks.blocks.first(b);
        const int64_t count = tasks.blocks.samples(b);
        const Range rows = tasks.tile(task);
        if (built != task / tasks.tiles) {
          cols = builder.build(input, n, count, g, all_in, col);
          built = task / tasks.tiles;
        }
        at::Tensor y = gemm_operand(output, p.groups, n, count, g, rows, y_buffer, /*fill=*/false);
        const at::Tensor w = weight_matrix(p, weight, g).narrow(0, rows.begin, rows.size());
        if (bias.defined()) {
          at::addmm_out(y, bias.narrow(0, g * p.out_per_group() + rows.begin, rows.size()).unsqueeze(1), w, cols);
        } else {
          at::mm_out(y, w, cols);
        }
        scatter_operand(y, output, p.groups, n, count, g, rows);
      }
    });
  });
}

void im2col_grad_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                       at::Tensor& grad_input) {
  // Tiles of input channels: each one's column rows are whole channels, which col2im
  // scatters into that tile of grad_input alone.
  const int64_t min_channels = ceil_div(kMinTileRows, p.kernel_plane());
  const CorrelationTasks tasks(p, p.in_per_group(), min_channels, grad_output.element_size());
  const int64_t S = tasks.blocks.size, L = p.out_plane(), taps = p.kernel_plane();
  const Range all_out{0, p.out_per_group()};
  const std::vector<int64_t> offsets = column_offsets(p);
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_im2col_grad_input", [&] {
    parallel_gemms(tasks.count(), [&](int64_t begin, int64_t end) {
      ColumnBuilder<scalar_t> builder(p, offsets, ceil_div(p.in_per_group(), tasks.tiles) * p.kernel_h);
      at::Tensor col = at::empty({p.col_rows(), S * L}, grad_output.options());
      at::Tensor dy_buffer = at::empty({p.out_per_group(), S * L}, grad_output.options());
      at::Tensor dy;
      int64_t built = -1;  // the (block, group) whose grad_output `dy` holds
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = tasks.block(task), g = tasks.group(task), n = tasks.blocks.first(b);
        const int64_t count = tasks.blocks.samples(b);
        const Range channels = tasks.tile(task);
        if (built != task / tasks.tiles) {
          dy = gemm_operand(grad_output, p.groups, n, count, g, all_out, dy_buffer, /*fill=*/true);
          built = task / tasks.tiles;
        }
        const at::Tensor wt = weight_matrix(p, weight, g).narrow(1, channels.begin * taps, channels.size() * taps).t();
        if (is_pointwise(p)) {  // the column gradient is the input gradient: no col2im
          at::Tensor dx = gemm_operand(grad_input, p.groups, n, count, g, channels, col, /*fill=*/false);
          at::mm_out(dx, wt, dy);
          scatter_operand(dx, grad_input, p.groups, n, count, g, channels);
          continue;
        }
        at::Tensor dcol = col.narrow(0, 0, channels.size() * taps).narrow(1, 0, count * L);
        at::mm_out(dcol, wt, dy);
        const at::Tensor dx = slice(grad_input, p.groups, n, count, g, {0, p.in_per_group()});
        for (int64_t s = 0; s < count; ++s)
          builder.scatter(dcol.const_data_ptr<scalar_t>() + s * L, dcol.stride(0),
                          dx.select(0, s).mutable_data_ptr<scalar_t>(), channels);
      }
    });
  });
}

void im2col_grad_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                        at::Tensor& grad_weight) {
  if (p.out_per_group() * p.col_rows() <= kSmallWeight) return grad_weight_by_chunks(p, grad_output, input, grad_weight);
  // Tiles of dW: (output channels) x (kernel rows, im2col.h); each task reduces its tile over the
  // batch, block after block. Kernel rows are cut first: their columns are built once.
  const int64_t L = p.out_plane(), kernel_rows = p.in_per_group() * p.kernel_h;
  // Tiles of at least kMinTileRows * 2 columns of dW where there are enough: a thin tile's GEMM streams
  // all of grad_output for a few columns (pointwise layers with few input channels).
  const int64_t in_tiles = std::clamp<int64_t>(std::min(ceil_div(kTargetTasks, p.groups), p.col_rows() / (2 * kMinTileRows)),
                                               1, kernel_rows);
  const int64_t out_tiles = tiles_for(p.groups * in_tiles, p.out_per_group(), kMinTileRows);
  const int64_t max_in_tile = ceil_div(kernel_rows, in_tiles);
  const SampleBlocks blocks(p.batch, L, max_in_tile * p.kernel_w * L * input.element_size());
  const int64_t S = blocks.size;
  const int64_t tasks = p.groups * out_tiles * in_tiles;
  const int64_t max_out_tile = ceil_div(p.out_per_group(), out_tiles);
  // Blocks of samples take NCHW grad_output through a copy (gemm_operand). Every kernel-row tile of
  // an output tile reads the same copies: where the whole batch's fits the column budget, a thread
  // copies it once per output tile instead of once per task.
  const bool shared_dy = S > 1 && grad_output.is_contiguous() &&
                         max_out_tile * p.batch * L * grad_output.element_size() <= kColumnBlockBytes;
  const std::vector<int64_t> offsets = column_offsets(p);
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_im2col_grad_weight", [&] {
    parallel_gemms(tasks, [&](int64_t begin, int64_t end) {
      ColumnBuilder<scalar_t> builder(p, offsets, max_in_tile);
      at::Tensor col = at::empty({max_in_tile * p.kernel_w, S * L}, input.options());
      at::Tensor dy_buffer = at::empty({max_out_tile, (shared_dy ? p.batch : S) * L}, grad_output.options());
      at::Tensor dy_batch;
      int64_t copied = -1;  // the (group, output tile) whose whole batch dy_batch holds
      for (int64_t task = begin; task < end; ++task) {
        const int64_t g = task / (out_tiles * in_tiles);
        const Range outs = part(p.out_per_group(), out_tiles, task / in_tiles % out_tiles);
        const Range ins = part(kernel_rows, in_tiles, task % in_tiles);
        at::Tensor dw = weight_matrix(p, grad_weight, g)
                            .narrow(0, outs.begin, outs.size())
                            .narrow(1, ins.begin * p.kernel_w, ins.size() * p.kernel_w);
        if (shared_dy && copied != task / in_tiles) {
          dy_batch = gemm_operand(grad_output, p.groups, 0, p.batch, g, outs, dy_buffer, /*fill=*/true);
          copied = task / in_tiles;
        }
        for (int64_t b = 0; b < blocks.count; ++b) {
          const int64_t n = blocks.first(b), count = blocks.samples(b);
          const at::Tensor cols = builder.build(input, n, count, g, ins, col);
          const at::Tensor dy =
              shared_dy ? dy_batch.narrow(1, n * L, count * L)
                        : gemm_operand(grad_output, p.groups, n, count, g, outs, dy_buffer, /*fill=*/true);
          if (b == 0) {
            at::mm_out(dw, dy, cols.t());
          } else {
            dw.addmm_(dy, cols.t());
          }
        }
      }
    });
  });
}

}  // namespace cpu
}  // namespace cnnext
