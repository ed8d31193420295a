// Convolution of integer tensors on the CPU: int8, uint8, int16, int32 and
// int64, the integer types PyTorch's CPU convolution takes, with its results
// bit for bit.
//
// PyTorch computes an integer convolution in the tensors' own type: products
// and sums wrap around modulo 2^bits (an int8 convolution of 100 * 100 over 4
// channels gives 64). Here every product and sum is computed in an unsigned
// type at least as wide as T (Acc<T>): unsigned arithmetic wraps by
// definition (signed overflow is undefined behaviour in C++), wrapping in a
// wider type keeps the same low bits, and converting back to T keeps exactly
// those, so the result is PyTorch's whatever the order of the additions.
// uint32_t rather than T itself for the types narrower than 32 bits: C++
// promotes those to int before it multiplies, and 65535 * 65535 overflows int.
//
// Two algorithms, as for the floating types:
// - direct: the input is first staged into a zero-padded copy (kernel_utils.h),
//   so borders never reach the inner loop; then blocks of output rows of four
//   output channels at a time are accumulated in rows of Acc<T>, one kernel
//   tap at a time: a multiply-add of four weights over a run of the staged
//   input, which vectorizes (DirectWalk says how the runs cover the plane).
// - im2col: the output plane is cut into tiles whose columns (im2col.h) fit in
//   cache; each tile's GEMM, written here rather than taken from ATen, passes
//   every output channel of the group over that one block of columns.
// Integer results are exact, so the work is split over threads freely: the
// results never depend on the thread count. The loops are compiled for the
// baseline ISA only (vectorized by the compiler with SSE2 or NEON): unlike the
// float kernels they are not yet in the per-ISA table (variants.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "conv2d_integer.h"
#include "im2col.h"
#include "kernel_utils.h"

namespace cnnext {
namespace cpu {
namespace {

template <typename T>
using Acc = std::conditional_t<sizeof(T) <= sizeof(uint32_t), uint32_t, uint64_t>;

// acc[j][i] += w[j] * src[i * stride] for j < kOc, i < n (acc rows `ld`
// apart): kOc output channels from one pass over the source. kStride is the
// stride when it is 1 (known at compile time, so the loop vectorizes), 0 when
// read at run time.
template <typename T, int64_t kStride, int kOc>
inline void multiply_add_rows(Acc<T>* acc, int64_t ld, const Acc<T>* w, const T* src, int64_t n,
                                    int64_t stride) {
  const int64_t s = kStride > 0 ? kStride : stride;
  for (int64_t i = 0; i < n; ++i) {
    const Acc<T> v = static_cast<Acc<T>>(src[i * s]);
    for (int j = 0; j < kOc; ++j) acc[j * ld + i] += w[j] * v;
  }
}

template <typename T>
inline void store_row(const Acc<T>* acc, int64_t n, T* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(acc[i]);
}

// ---------------------------------------------------------------- direct

// One axis of the staged input. Staged position o * out_step + k * tap_step
// holds the input that tap k of output o reads. Plain staging keeps the whole
// span the windows cover (out_step = stride, tap_step = dilation); when
// windows lie far apart (a stride above the dilated kernel), gathering keeps
// only the positions read (out_step = kernel, tap_step = 1), so a huge stride
// or padding never becomes a huge buffer.
struct StagedAxis {
  int64_t size, out_step, tap_step;
  Gather gather;

  StagedAxis(int64_t out, int64_t kernel, int64_t stride, int64_t dilation) {
    const int64_t span = (out - 1) * stride + (kernel - 1) * dilation + 1;
    if (span <= out * kernel) {
      size = span, out_step = stride, tap_step = dilation, gather = Gather{};
    } else {
      size = out * kernel, out_step = kernel, tap_step = 1, gather = Gather{kernel, stride, dilation};
    }
  }
};

// Outputs per accumulator row: kOcBlock such rows stay in the L1 cache while
// the taps pass over them.
constexpr int64_t kRowBlock = 512;
// Output channels computed together: each staged value loaded feeds this many.
constexpr int kOcBlock = 4;

// How the direct kernel walks one output plane: in segments of outputs whose
// inputs, for any one tap, lie at a fixed step in the staged plane. With both
// strides 1 (and no gathering), a segment is a block of whole output rows
// computed on the staged grid: output (oh, ow) sits at oh * pitch + ow with
// pitch the staged row's length, so one tap is one run over all of them, and
// the pitch - out_w columns in between are computed and dropped (their taps
// read the next staged row; the run ends at the last row's out_w, so it stays
// inside the plane). Otherwise a segment is a block of one output row, read at
// the horizontal stride.
struct DirectWalk {
  StagedAxis sy, sx;
  bool flat;
  int64_t rows_per_segment;  // flat: output rows per segment

  explicit DirectWalk(const Conv2dParams& p)
      : sy(p.out_h, p.kernel_h, p.stride_h, p.dilation_h),
        sx(p.out_w, p.kernel_w, p.stride_w, p.dilation_w),
        flat(sy.out_step == 1 && sx.out_step == 1),
        rows_per_segment(std::clamp<int64_t>(kRowBlock / sx.size, 1, p.out_h)) {}

  int64_t staged_plane() const { return sy.size * sx.size; }
  // Accumulators one output channel needs.
  int64_t accumulators(const Conv2dParams& p) const {
    return flat ? (rows_per_segment - 1) * sx.size + p.out_w : std::min(kRowBlock, p.out_w);
  }
};

// Output channels [oc, oc + kOc) of one sample: `staged` holds the group's
// staged input planes, `weight` and `bias` (may be null) start at channel oc,
// `out` at its plane.
template <typename T, int64_t kStride, int kOc>
void direct_channels(const Conv2dParams& p, const DirectWalk& d, const T* staged, const T* weight,
                                       const T* bias, T* out, Acc<T>* acc) {
  using A = Acc<T>;
  const int64_t ld = d.accumulators(p);
  A w[kOc];
  auto segment = [&](int64_t oh0, int64_t rows, int64_t ow0, int64_t width) {
    const int64_t pitch = d.flat ? d.sx.size : width;
    const int64_t n = (rows - 1) * pitch + width;
    for (int j = 0; j < kOc; ++j)
      std::fill(acc + j * ld, acc + j * ld + n, bias != nullptr ? static_cast<A>(bias[j]) : A(0));
    for (int64_t c = 0; c < p.in_per_group(); ++c) {
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        const T* row = staged + c * d.staged_plane() + (oh0 * d.sy.out_step + kh * d.sy.tap_step) * d.sx.size +
                       ow0 * d.sx.out_step;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          for (int j = 0; j < kOc; ++j) w[j] = static_cast<A>(weight[((j * p.in_per_group() + c) * p.kernel_h + kh) *
                                                                     p.kernel_w + kw]);
          multiply_add_rows<T, kStride, kOc>(acc, ld, w, row + kw * d.sx.tap_step, n, d.sx.out_step);
        }
      }
    }
    for (int j = 0; j < kOc; ++j)
      for (int64_t r = 0; r < rows; ++r)
        store_row(acc + j * ld + r * pitch, width, out + j * p.out_plane() + (oh0 + r) * p.out_w + ow0);
  };
  if (d.flat) {
    for (int64_t oh0 = 0; oh0 < p.out_h; oh0 += d.rows_per_segment)
      segment(oh0, std::min(d.rows_per_segment, p.out_h - oh0), 0, p.out_w);
    return;
  }
  for (int64_t oh = 0; oh < p.out_h; ++oh)
    for (int64_t ow0 = 0; ow0 < p.out_w; ow0 += kRowBlock) segment(oh, 1, ow0, std::min(kRowBlock, p.out_w - ow0));
}

template <typename T>
void direct_forward(const Conv2dParams& p, const T* x, const T* weight, const T* bias, T* y) {
  const DirectWalk d(p);
  const Staging staging{d.sy.size, d.sx.size, p.pad_top, p.pad_left, 1, 1, d.sy.gather, d.sx.gather};
  const int64_t planes = p.batch * p.in_channels;
  int64_t staged_plane = 0, staged_size = 0;
  TORCH_CHECK(!mul_overflows(d.sy.size, d.sx.size, &staged_plane) && !mul_overflows(planes, staged_plane, &staged_size),
              "cnnext conv2d: the zero-padded copy of the input that the direct algorithm reads would have more "
              "elements than int64 can count; use algo='im2col'");
  // Not value-initialized: stage_planes writes every element.
  const std::unique_ptr<T[]> staged(new T[staged_size]);
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    stage_planes(x + begin * p.in_plane(), end - begin, p.in_h, p.in_w, staging, staged.get() + begin * staged_plane);
  });
  // One task per sample and block of kOcBlock output channels of one group (fewer at a group's end).
  const int64_t blocks_per_group = (p.out_per_group() + kOcBlock - 1) / kOcBlock;
  const int64_t tasks = p.batch * p.groups * blocks_per_group;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<Acc<T>> acc(kOcBlock * d.accumulators(p));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / (p.groups * blocks_per_group), g = task / blocks_per_group % p.groups;
      const int64_t first = task % blocks_per_group * kOcBlock;
      const int64_t oc = g * p.out_per_group() + first, count = std::min<int64_t>(kOcBlock, p.out_per_group() - first);
      const T* in = staged.get() + (n * p.in_channels + g * p.in_per_group()) * staged_plane;
      const T* b = bias != nullptr ? bias + oc : nullptr;
      T* out = y + (n * p.out_channels + oc) * p.out_plane();
      const auto run = [&](auto oc_block, int64_t j) {
        constexpr int kOc = decltype(oc_block)::value;
        const T* w = weight + (oc + j) * p.col_rows();
        const T* b_j = b != nullptr ? b + j : nullptr;
        T* out_j = out + j * p.out_plane();
        if (d.sx.out_step == 1) {
          direct_channels<T, 1, kOc>(p, d, in, w, b_j, out_j, acc.data());
        } else {
          direct_channels<T, 0, kOc>(p, d, in, w, b_j, out_j, acc.data());
        }
      };
      if (count == kOcBlock) {
        run(std::integral_constant<int, kOcBlock>{}, 0);
      } else {
        for (int64_t j = 0; j < count; ++j) run(std::integral_constant<int, 1>{}, j);
      }
    }
  });
}

// ---------------------------------------------------------------- im2col

// A column buffer stays within this size (about the L2 cache).
constexpr int64_t kMaxColumnBytes = 1 << 20;
// Tiles have at least this many pixels, however many rows the columns have:
// narrower GEMM rows would spend more time in loop overhead than in arithmetic.
constexpr int64_t kMinTilePixels = 64;

// The output plane cut into tiles of `rows` x `cols` pixels (the last ones
// may be smaller) whose columns fit in kMaxColumnBytes.
struct Tiling {
  int64_t rows, cols, per_row, count;

  Tiling(const Conv2dParams& p, int64_t element_size) {
    const int64_t pixels = std::max(kMinTilePixels, kMaxColumnBytes / (p.col_rows() * element_size));
    cols = std::min(p.out_w, pixels);
    rows = std::clamp<int64_t>(pixels / cols, 1, p.out_h);
    per_row = (p.out_w + cols - 1) / cols;
    count = (p.out_h + rows - 1) / rows * per_row;
  }
};

// The tile's output: out[o][r][c] = bias[o] + sum over k of w[o][k] * col[k][r * t.out_w + c]
// for the group's output channels o, where out's channels are `channel_ld`
// apart and its rows `row_ld` (those of the whole output).
template <typename T>
void gemm_tile(const Conv2dParams& t, const T* w, const T* bias, const T* col, T* out,
                                 int64_t channel_ld, int64_t row_ld, std::vector<Acc<T>>& acc) {
  using A = Acc<T>;
  const int64_t pixels = t.out_plane(), depth = t.col_rows();
  for (int64_t o = 0; o < t.out_per_group(); ++o) {
    std::fill(acc.begin(), acc.begin() + pixels, bias != nullptr ? static_cast<A>(bias[o]) : A(0));
    const T* w_row = w + o * depth;
    for (int64_t k = 0; k < depth; ++k) {
      const A w_k = static_cast<A>(w_row[k]);
      multiply_add_rows<T, 1, 1>(acc.data(), pixels, &w_k, col + k * pixels, pixels, 1);
    }
    for (int64_t r = 0; r < t.out_h; ++r)
      store_row(acc.data() + r * t.out_w, t.out_w, out + o * channel_ld + r * row_ld);
  }
}

template <typename T>
void im2col_forward(const Conv2dParams& p, const T* x, const T* weight, const T* bias, T* y) {
  const Tiling tiling(p, sizeof(T));
  const int64_t K = p.col_rows();
  // One task per (sample, group, tile).
  const int64_t tasks = p.batch * p.groups * tiling.count;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> col(K * tiling.rows * tiling.cols);
    std::vector<Acc<T>> acc(tiling.rows * tiling.cols);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t tile = task % tiling.count, ng = task / tiling.count;
      const int64_t n = ng / p.groups, g = ng % p.groups;
      const int64_t oh0 = tile / tiling.per_row * tiling.rows, ow0 = tile % tiling.per_row * tiling.cols;
      const Conv2dParams t = tile_params(p, oh0, std::min(tiling.rows, p.out_h - oh0), ow0,
                                         std::min(tiling.cols, p.out_w - ow0));
      im2col(t, x + (n * p.in_channels + g * p.in_per_group()) * p.in_plane(), col.data(), t.out_plane());
      const int64_t first = g * p.out_per_group();
      gemm_tile(t, weight + first * K, bias != nullptr ? bias + first : nullptr, col.data(),
                y + ((n * p.out_channels + first) * p.out_h + oh0) * p.out_w + ow0, p.out_plane(), p.out_w, acc);
    }
  });
}

}  // namespace

void integer_conv2d_forward(ConvAlgo algo, const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, at::Tensor& output) {
  AT_DISPATCH_INTEGRAL_TYPES(input.scalar_type(), "cnnext_integer_conv2d", [&] {
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    const scalar_t* b = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* y = output.mutable_data_ptr<scalar_t>();
    if (algo == ConvAlgo::Im2col) return im2col_forward(p, x, w, b, y);
    direct_forward(p, x, w, b, y);
  });
}

}  // namespace cpu
}  // namespace cnnext
