// The depthwise family of the direct convolution: every output channel reads one input
// channel (C_in / groups == 1; output channel oc reads input channel
// oc / multiplier). The general direct kernels compute kOcBlock output
// channels per pass over the input and would waste all but `multiplier` of
// them here, so this family computes one plane at a time, with vectors over
// pixels and no waste: out[oh][ow] = sum over the kernel taps t of
// w[t] * staged[start(oh, ow) + offset[t]].
//
// Staging (a zero-padded copy of one plane, as in the other direct kernels)
// takes one of two layouts:
// - flat (stride 1): rows exactly as wide as the windows need, so that every
//   tap is a constant offset from f = oh * cols + ow and vectors run over
//   whole rows and across row ends (the columns past out_w are computed and
//   dropped): narrow planes (7 x 7, 14 x 14) waste few lanes;
// - phased (a stride): the plane split by column phase into planes of their
//   own, column x at phase x % stride_w, index x / stride_w, so that the taps
//   of a strided window read consecutive outputs from consecutive addresses
//   (no gather per tap). Vectors then run along each output row.
// grad_input at stride 1 is the flat correlation of grad_output, padded, with
// the flipped kernel, summed over the multiplier's planes; at a stride it is
// split by the phase of the input pixel (InputPhases), each phase a flat
// correlation with only the taps that reach it. grad_weight pairs each staged
// input row with the row of grad_output that reads it, per tap (flat at stride
// 1 over a finite input); it reduces the batch in BatchChunks.
// Included by the per-ISA translation units only (conv2d_direct_*.cpp),
// after their target pragma: everything here has internal linkage.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../kernel_utils.h"
#include "../vec.h"

namespace cnnext {
namespace cpu {
namespace {

// Vectors of outputs computed together: one accumulator each, so that the
// FMAs of consecutive taps do not wait for each other.
constexpr int64_t kDepthwiseVectors = 4;

// acc[u] = sum_t w[t] * (the vector at staged + start[u] + offset[t]) for kU vectors.
template <typename T, int64_t B, int64_t kU>
__attribute__((always_inline)) inline void tap_sums(const T* staged, const int64_t* start, const int64_t* offset, const T* w, int64_t taps,
                            Vec<T, B> (&acc)[kU]) {
  for (int64_t t = 0; t < taps; ++t) {
    const T* x = staged + offset[t];
    const T wt = w[t];
    CNNEXT_UNROLL
    for (int64_t u = 0; u < kU; ++u) acc[u] += wt * load_vec<B>(x + start[u]);
  }
}

// scratch[i * V: (i + 1) * V] = the sums of the vector starting at staged + start[i], for i < vectors.
template <typename T, int64_t B>
__attribute__((always_inline)) inline void correlate_vectors(const T* staged, const int64_t* start, int64_t vectors, const int64_t* offset,
                                     const T* w, int64_t taps, T* scratch) {
  constexpr int64_t V = kLanes<T, B>;
  int64_t i = 0;
  for (; i + kDepthwiseVectors <= vectors; i += kDepthwiseVectors) {
    Vec<T, B> acc[kDepthwiseVectors] = {};
    tap_sums<T, B, kDepthwiseVectors>(staged, start + i, offset, w, taps, acc);
    CNNEXT_UNROLL
    for (int64_t u = 0; u < kDepthwiseVectors; ++u) store_vec<T, B>(scratch + (i + u) * V, acc[u]);
  }
  for (; i < vectors; ++i) {
    Vec<T, B> acc[1] = {};
    tap_sums<T, B, 1>(staged, start + i, offset, w, taps, acc);
    store_vec<T, B>(scratch + i * V, acc[0]);
  }
}

// The staged geometry of one plane for a correlation with `out_h` x `out_w`
// outputs, and where each output vector and each tap start in it.
struct DepthwiseLayout {
  Staging staging;          // rows x cols of the zero-padded plane, cols = phases * phase_cols
  bool flat;                // flat_layout's; otherwise phased_layout's
  int64_t phases;           // stride_w of the phased layout; 1 when flat
  int64_t phase_cols;       // staged columns per phase
  int64_t region = 0;       // phased: elements per phase's plane, slack included
  int64_t plane;            // elements per staged plane, slack included
  int64_t pitch;            // scratch elements between output rows
  int64_t lines = 0;        // elements of stage_phased's unsplit plane (phased, two or more phases)
  std::vector<int64_t> start;   // staged offset of each output vector (scratch holds them in order)
  std::vector<int64_t> offset;  // staged offset of each tap, kernel-row major
};

// The flat layout for a stride-1 correlation of a kernel_h x kernel_w kernel
// (dilations dh, dw) with out_h x out_w outputs, the source placed at
// (off_y, off_x) (see Staging).
inline DepthwiseLayout flat_layout(int64_t V, int64_t out_h, int64_t out_w, int64_t kernel_h, int64_t kernel_w, int64_t dh, int64_t dw,
                                   int64_t off_y, int64_t off_x) {
  DepthwiseLayout l;
  const int64_t rows = out_h + (kernel_h - 1) * dh, cols = out_w + (kernel_w - 1) * dw;
  l.staging = {rows, cols, off_y, off_x, 1, 1};
  l.flat = true;
  l.phases = 1;
  l.phase_cols = cols;
  l.pitch = cols;
  const int64_t positions = round_up(out_h * cols, V);
  for (int64_t f = 0; f < positions; f += V) l.start.push_back(f);
  for (int64_t kh = 0; kh < kernel_h; ++kh)
    for (int64_t kw = 0; kw < kernel_w; ++kw) l.offset.push_back(kh * dh * cols + kw * dw);
  // The last vector reads up to the last tap's offset past the last position.
  l.plane = std::max(rows * cols, positions + l.offset.back());
  return l;
}

// The phased layout of a forward correlation (stride, padding, dilation of p):
// the zero-padded plane split by column phase, each phase a plane of its own
// (region elements apart), so that the taps of a strided window read
// consecutive outputs from consecutive addresses. Vectors run along each output
// row, the last one past its end into the next row (lanes computed and dropped).
inline DepthwiseLayout phased_layout(const Conv2dParams& p, int64_t V) {
  DepthwiseLayout l;
  const int64_t padded_w = round_up(p.out_w, V);  // outputs computed per row
  const int64_t width = (p.out_w - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1;
  const int64_t rows = (p.out_h - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1;
  l.flat = false;
  l.phases = p.stride_w;
  l.phase_cols = ceil_div_nonneg(width, l.phases);
  l.staging = {rows, l.phases * l.phase_cols, p.pad_top, p.pad_left, 1, 1};
  // A row's last vector reads up to V - 1 elements past the phase's last column
  // (its window's columns run up to phase_cols - 1).
  l.region = round_up(rows * l.phase_cols, V) + V;
  l.plane = l.phases * l.region;
  l.lines = l.phases == 1 ? 0 : l.phases * round_up(rows * l.phase_cols, V);
  l.pitch = padded_w;
  for (int64_t oh = 0; oh < p.out_h; ++oh)
    for (int64_t ow = 0; ow < padded_w; ow += V) l.start.push_back(oh * p.stride_h * l.phase_cols + ow);
  for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      const int64_t x = kw * p.dilation_w;
      l.offset.push_back(x % p.stride_w * l.region + kh * p.dilation_h * l.phase_cols + x / p.stride_w);
    }
  }
  return l;
}

// Copies one source plane into a phased staging plane: phase q's row y, index
// i holds src[y - off_y][i * phases + q - off_x], zero outside the source.
// The rows are copied whole into the unsplit plane (`lines`, l.lines elements;
// dst itself for one phase), whose zero padding lies where no source row goes,
// the same place for every plane; the phases are then split from it in whole
// vectors: two (stride 2) with a shuffle per pair of vectors. Each buffer is
// zero where nothing is copied: its slack and padding are never written.
template <typename T, int64_t B>
void stage_phased(const T* src, int64_t src_h, int64_t src_w, const DepthwiseLayout& l, T* lines, T* dst) {
  constexpr int64_t V = kLanes<T, B>;
  const Staging& s = l.staging;
  T* unsplit = l.phases == 1 ? dst : lines;
  const int64_t x_lo = std::max<int64_t>(0, -s.off_x), x_hi = std::min(src_w, s.cols - s.off_x);
  const int64_t y_lo = std::max<int64_t>(0, -s.off_y), y_hi = std::min(src_h, s.rows - s.off_y);
  for (int64_t sy = y_lo; sy < y_hi && x_hi > x_lo; ++sy)
    copy_short<T, B>(src + sy * src_w + x_lo, x_hi - x_lo, unsplit + (sy + s.off_y) * s.cols + s.off_x + x_lo);
  const int64_t n = s.rows * l.phase_cols;  // elements per phase
  if (l.phases == 2) {
    for (int64_t k = 0; k < n; k += V) {
      Vec<T, B> even, odd;
      deinterleave_pairs<T, B>(load_vec<B>(lines + 2 * k), load_vec<B>(lines + 2 * k + V), even, odd,
                               std::make_index_sequence<V>());
      store_vec<T, B>(dst + k, even);
      store_vec<T, B>(dst + l.region + k, odd);
    }
  } else if (l.phases > 2) {
    for (int64_t q = 0; q < l.phases; ++q)
      for (int64_t k = 0; k < n; ++k) dst[q * l.region + k] = lines[k * l.phases + q];
  }
}

// Copies source planes into flat staging planes, l.plane apart: only the source's rectangle, in the
// same place for every plane, so that the zero padding and slack around it stay as dst was allocated.
template <typename T, int64_t B>
void stage_flat(const T* src, int64_t planes, int64_t src_h, int64_t src_w, const DepthwiseLayout& l, T* dst) {
  const Staging& s = l.staging;
  const int64_t x_lo = std::max<int64_t>(0, -s.off_x), x_hi = std::min(src_w, s.cols - s.off_x);
  const int64_t y_lo = std::max<int64_t>(0, -s.off_y), y_hi = std::min(src_h, s.rows - s.off_y);
  for (int64_t c = 0; c < planes && x_hi > x_lo; ++c)
    for (int64_t sy = y_lo; sy < y_hi; ++sy)
      copy_short<T, B>(src + (c * src_h + sy) * src_w + x_lo, x_hi - x_lo,
                       dst + c * l.plane + (sy + s.off_y) * s.cols + s.off_x + x_lo);
}

// Stages `planes` source planes, l.plane apart in dst, zeroed when allocated and staged with this layout
// only (stage_flat, stage_phased: each writes the same places for every plane); `lines`: stage_phased's
// (the phased layout only).
template <typename T, int64_t B>
void stage(const T* src, int64_t planes, int64_t src_h, int64_t src_w, const DepthwiseLayout& l, T* lines, T* dst) {
  if (l.flat) {
    stage_flat<T, B>(src, planes, src_h, src_w, l, dst);
  } else {
    for (int64_t c = 0; c < planes; ++c)
      stage_phased<T, B>(src + c * src_h * src_w, src_h, src_w, l, lines, dst + c * l.plane);
  }
}

// out (out_h x out_w) = bias + the correlation of the staged plane(s) with the taps of `w` at
// `offset`, through `scratch` (the vectors of l.start, rows l.pitch apart).
template <typename T, int64_t B>
void correlate_plane(const DepthwiseLayout& l, const T* staged, const int64_t* offset,
                                       const T* w, int64_t taps, T bias, int64_t out_h, int64_t out_w, T* scratch,
                                       T* out) {
  correlate_vectors<T, B>(staged, l.start.data(), static_cast<int64_t>(l.start.size()), offset, w, taps, scratch);
  for (int64_t oh = 0; oh < out_h; ++oh)
    transform_row<B>(scratch + oh * l.pitch, out_w, out + oh * out_w, [bias](auto v) { return v + bias; });
}

template <typename T, class Arch>
void depthwise_forward(const Conv2dParams& p, const T* input, const T* weight, const T* bias, T* output) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  const int64_t m = p.out_per_group(), taps = p.kernel_plane();
  const bool flat = p.stride_h == 1 && p.stride_w == 1;
  const DepthwiseLayout l = flat ? flat_layout(V, p.out_h, p.out_w, p.kernel_h, p.kernel_w, p.dilation_h,
                                               p.dilation_w, p.pad_top, p.pad_left)
                                 : phased_layout(p, V);
  const int64_t vectors = static_cast<int64_t>(l.start.size());
  at::parallel_for(0, p.batch * p.in_channels, 1, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> staged(l.plane), lines(l.lines);
    AlignedBuffer<T> scratch(vectors * V);
    for (int64_t task = begin; task < end; ++task) {  // task = n * C_in + c
      const int64_t c = task % p.in_channels;
      stage<T, B>(input + task * p.in_plane(), 1, p.in_h, p.in_w, l, lines.data(), staged.data());
      for (int64_t j = 0; j < m; ++j) {
        const int64_t oc = c * m + j;
        correlate_plane<T, B>(l, staged.data(), l.offset.data(), weight + oc * taps, taps, bias ? bias[oc] : T(0),
                        p.out_h, p.out_w, scratch.data(), output + (task * m + j) * p.out_plane());
      }
    }
  });
}

// One phase of a strided grad_input: the inputs (a * stride_h + py, b * stride_w + px), a < rows,
// b < cols. Only the taps t with (py + pad_top - kh * dilation_h) and (px + pad_left - kw *
// dilation_w) multiples of the stride read such an input, from the output (a + ry, b + rx): a
// stride-1 correlation of grad_output with those taps, no product with a spread-out zero.
struct InputPhase {
  int64_t py, px, rows, cols;
  std::vector<int64_t> taps;    // the taps (kh * kernel_w + kw) that reach the phase
  std::vector<int64_t> offset;  // per tap, the staged offset of output (a + ry, b + rx) from a * pitch + b
  std::vector<int64_t> start;   // staged offset of each vector of positions a * pitch + b
};

// The staging of grad_output (flat: rows l.pitch apart, zero-padded so that every phase's taps read in
// bounds) and the phases of a strided layer's inputs, phase (py, px) at [py * stride_w + px].
struct InputPhases {
  DepthwiseLayout l;
  std::vector<InputPhase> phases;
  int64_t scratch;  // elements of the largest phase's vectors, and a vector pair of slack

  InputPhases(const Conv2dParams& p, int64_t V) {
    // The output row (column) of each tap relative to the phase's index, where it has one.
    const auto reach = [](int64_t phase, int64_t pad, int64_t k, int64_t dilation, int64_t stride, int64_t& r) {
      const int64_t v = phase + pad - k * dilation;
      if (((v % stride) + stride) % stride != 0) return false;
      r = v / stride;
      return true;
    };
    int64_t ry_min = 0, rx_min = 0, row_end = p.out_h, col_end = p.out_w;
    std::vector<std::pair<int64_t, int64_t>> rel;  // per phase and tap: (ry, rx)
    for (int64_t py = 0; py < p.stride_h; ++py)
      for (int64_t px = 0; px < p.stride_w; ++px) {
        InputPhase ph{py, px, ceil_div_nonneg(std::max<int64_t>(p.in_h - py, 0), p.stride_h),
                      ceil_div_nonneg(std::max<int64_t>(p.in_w - px, 0), p.stride_w), {}, {}, {}};
        for (int64_t kh = 0; kh < p.kernel_h; ++kh)
          for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
            int64_t ry, rx;
            if (!reach(py, p.pad_top, kh, p.dilation_h, p.stride_h, ry) ||
                !reach(px, p.pad_left, kw, p.dilation_w, p.stride_w, rx))
              continue;
            ph.taps.push_back(kh * p.kernel_w + kw);
            rel.emplace_back(ry, rx);
            ry_min = std::min(ry_min, ry);
            rx_min = std::min(rx_min, rx);
            row_end = std::max(row_end, ph.rows + ry);
            col_end = std::max(col_end, ph.cols + rx);
          }
        phases.push_back(std::move(ph));
      }
    const int64_t off_y = -ry_min, off_x = -rx_min, rows = off_y + row_end, pitch = off_x + col_end;
    l.staging = {rows, pitch, off_y, off_x, 1, 1};
    l.flat = true;
    l.phases = 1;
    l.phase_cols = pitch;
    l.pitch = pitch;
    l.plane = rows * pitch;
    scratch = 0;
    size_t next = 0;
    for (InputPhase& ph : phases) {
      for (size_t t = 0; t < ph.taps.size(); ++t, ++next)
        ph.offset.push_back((rel[next].first + off_y) * pitch + rel[next].second + off_x);
      const int64_t positions = round_up(ph.rows * pitch, V);
      for (int64_t f = 0; f < positions; f += V) ph.start.push_back(f);
      scratch = std::max(scratch, positions + 2 * V);
      // The last vector reads up to the last tap's offset past the last position.
      for (int64_t o : ph.offset) l.plane = std::max(l.plane, positions + o);
    }
  }
};

// grad_input rows (a * stride_h + py) of one phase row py from the sums of its stride_w phases
// (sums[px]: rows l.pitch apart): input column b * stride_w + px takes sums[px][a * pitch + b].
// Stride 2 interleaves the two phases a vector pair at a time.
template <typename T, int64_t B>
void put_phase_rows(const Conv2dParams& p, const InputPhases& split, int64_t py, T* const* sums, T* grad_input) {
  constexpr int64_t V = kLanes<T, B>;
  const int64_t pitch = split.l.pitch;
  for (int64_t a = 0; a * p.stride_h + py < p.in_h; ++a) {
    T* out = grad_input + (a * p.stride_h + py) * p.in_w;
    if (p.stride_w == 2) {
      const T* even = sums[0] + a * pitch;
      const T* odd = sums[1] + a * pitch;
      for (int64_t b = 0; 2 * b < p.in_w; b += V) {
        Vec<T, B> lo, hi;
        interleave_pairs<T, B>(load_vec<B>(even + b), load_vec<B>(odd + b), lo, hi, std::make_index_sequence<V>());
        const int64_t left = p.in_w - 2 * b;
        if (left >= 2 * V) {
          store_vec<T, B>(out + 2 * b, lo);
          store_vec<T, B>(out + 2 * b + V, hi);
        } else if (left >= V) {
          store_vec<T, B>(out + 2 * b, lo);
          store_first<T, B>(out + 2 * b + V, hi, left - V);
        } else {
          store_first<T, B>(out + 2 * b, lo, left);
        }
      }
    } else {
      for (int64_t x = 0; x < p.in_w; ++x) out[x] = sums[x % p.stride_w][a * pitch + x / p.stride_w];
    }
  }
}

template <typename T, class Arch>
void depthwise_grad_input(const Conv2dParams& p, const T* grad_output, const T* weight, T* grad_input) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  const int64_t m = p.out_per_group(), taps = p.kernel_plane();
  if (p.stride_h > 1 || p.stride_w > 1) {
    // dx[c] = sum_j, per input phase, the correlation of grad_output[c*m + j] with the phase's taps.
    const InputPhases split(p, V);
    const DepthwiseLayout& l = split.l;
    // Per phase, the m planes' taps as one reduction (offsets into plane j), and their weights per channel.
    std::vector<std::vector<int64_t>> offset(split.phases.size());
    std::vector<std::vector<T>> w(split.phases.size());
    for (size_t q = 0; q < split.phases.size(); ++q) {
      const InputPhase& ph = split.phases[q];
      const int64_t n = static_cast<int64_t>(ph.taps.size());
      for (int64_t j = 0; j < m; ++j)
        for (int64_t t = 0; t < n; ++t) offset[q].push_back(j * l.plane + ph.offset[t]);
      for (int64_t oc = 0; oc < p.out_channels; ++oc)
        for (int64_t t = 0; t < n; ++t) w[q].push_back(weight[oc * taps + ph.taps[t]]);
    }
    at::parallel_for(0, p.batch * p.in_channels, 1, [&](int64_t begin, int64_t end) {
      AlignedBuffer<T> staged(m * l.plane);
      AlignedBuffer<T> scratch(p.stride_w * split.scratch);
      std::vector<T*> sums(p.stride_w);
      for (int64_t px = 0; px < p.stride_w; ++px) sums[px] = scratch.data() + px * split.scratch;
      for (int64_t task = begin; task < end; ++task) {  // task = n * C_in + c; its m gradient planes are adjacent
        const int64_t c = task % p.in_channels;
        stage<T, B>(grad_output + task * m * p.out_plane(), m, p.out_h, p.out_w, l, nullptr, staged.data());
        for (int64_t py = 0; py < p.stride_h; ++py) {
          for (int64_t px = 0; px < p.stride_w; ++px) {
            const size_t q = py * p.stride_w + px;
            const InputPhase& ph = split.phases[q];
            const int64_t n = static_cast<int64_t>(ph.taps.size()) * m;
            correlate_vectors<T, B>(staged.data(), ph.start.data(), static_cast<int64_t>(ph.start.size()),
                                    offset[q].data(), w[q].data() + c * n, n, sums[px]);
          }
          put_phase_rows<T, B>(p, split, py, sums.data(), grad_input + task * p.in_plane());
        }
      }
    });
    return;
  }
  // Stride 1: dx[c] = sum_j corr(grad_output[c*m + j] padded, w[c*m + j] flipped), as direct_grad_input.
  const DepthwiseLayout l = flat_layout(V, p.in_h, p.in_w, p.kernel_h, p.kernel_w, p.dilation_h, p.dilation_w,
                                           p.dilation_h * (p.kernel_h - 1) - p.pad_top,
                                           p.dilation_w * (p.kernel_w - 1) - p.pad_left);
  const int64_t vectors = static_cast<int64_t>(l.start.size());
  // The m planes' taps as one reduction: offsets into plane j, weights flipped.
  std::vector<int64_t> offset(m * taps);
  for (int64_t j = 0; j < m; ++j)
    for (int64_t t = 0; t < taps; ++t) offset[j * taps + t] = j * l.plane + l.offset[t];
  std::vector<T> flipped(p.out_channels * taps);
  for (int64_t oc = 0; oc < p.out_channels; ++oc)
    for (int64_t t = 0; t < taps; ++t) flipped[oc * taps + t] = weight[oc * taps + taps - 1 - t];
  at::parallel_for(0, p.batch * p.in_channels, 1, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> staged(m * l.plane);
    AlignedBuffer<T> scratch(vectors * V);
    for (int64_t task = begin; task < end; ++task) {  // task = n * C_in + c; its m gradient planes are adjacent
      const int64_t c = task % p.in_channels;
      stage<T, B>(grad_output + task * m * p.out_plane(), m, p.out_h, p.out_w, l, nullptr, staged.data());
      correlate_plane<T, B>(l, staged.data(), offset.data(), flipped.data() + c * m * taps, m * taps, T(0), p.in_h,
                      p.in_w, scratch.data(), grad_input + task * p.in_plane());
    }
  });
}

// How grad_weight's reduction runs over a sample's grad_output, copied l.pitch
// elements per row (zeros past out_w) to line up with l.start's vectors:
// `rows` rows of `row_vectors` vectors each. The last vector of a row covers
// tail_lanes lanes (0: all of them, or its other lanes' inputs are finite);
// the input lanes past them are cleared, since the padded grad_output lanes
// are zero but 0 * inf is NaN.
struct WeightRows {
  int64_t rows, row_vectors, tail_lanes;
};

// lanes[t] (a vector of partial sums) += the products gy_row * staged_row(t) over the rows and vectors
// of one sample, for kTaps taps from `offset`: one accumulator per tap, each grad_output vector loaded
// once for all of them. The lanes are added up once per batch chunk, not per sample and plane.
template <typename T, int64_t B, int64_t kTaps>
__attribute__((always_inline)) inline void weight_taps(const T* staged, const DepthwiseLayout& l, const T* gy,
                                                       const WeightRows& r, const Bits<T, B>& tail_keep,
                                                       const int64_t* offset, T* lanes) {
  constexpr int64_t V = kLanes<T, B>;
  Vec<T, B> acc[kTaps];
  CNNEXT_UNROLL
  for (int64_t k = 0; k < kTaps; ++k) acc[k] = load_vec<B>(lanes + k * V);
  for (int64_t row = 0; row < r.rows; ++row) {
    const int64_t* start = l.start.data() + row * r.row_vectors;
    const T* g = gy + row * r.row_vectors * V;
    for (int64_t v = 0; v < r.row_vectors; ++v) {
      const Vec<T, B> gv = load_vec<B>(g + v * V);
      const bool masked = r.tail_lanes != 0 && v == r.row_vectors - 1;
      CNNEXT_UNROLL
      for (int64_t k = 0; k < kTaps; ++k) {
        Vec<T, B> xv = load_vec<B>(staged + start[v] + offset[k]);
        if (masked) xv = keep_lanes<T, B>(xv, tail_keep);
        acc[k] += gv * xv;
      }
    }
  }
  CNNEXT_UNROLL
  for (int64_t k = 0; k < kTaps; ++k) store_vec<T, B>(lanes + k * V, acc[k]);
}

template <typename T, int64_t B>
void weight_plane(const T* staged, const DepthwiseLayout& l, const T* gy, const WeightRows& r, T* lanes) {
  constexpr int64_t V = kLanes<T, B>;
  const int64_t taps = static_cast<int64_t>(l.offset.size());
  const Bits<T, B> tail_keep = lane_mask<T, B>(0, r.tail_lanes);
  int64_t t = 0;
  for (; t + 8 <= taps; t += 8)
    weight_taps<T, B, 8>(staged, l, gy, r, tail_keep, l.offset.data() + t, lanes + t * V);
  for (; t + 4 <= taps; t += 4)
    weight_taps<T, B, 4>(staged, l, gy, r, tail_keep, l.offset.data() + t, lanes + t * V);
  for (; t < taps; ++t) weight_taps<T, B, 1>(staged, l, gy, r, tail_keep, l.offset.data() + t, lanes + t * V);
}

// grad_weight (and grad_bias where it is not null). `finite_input`: the input
// is known to hold no infinity or NaN, so that a stride-1 layer can run its reduction
// over the flat layout, vectors spanning narrow rows (7 x 7: 4 vectors a plane
// instead of 7), the lanes between rows multiplying zeros of grad_output.
template <typename T, class Arch>
void depthwise_grad_weight(const Conv2dParams& p, const T* grad_output, const T* input, T* grad_weight,
                           T* grad_bias, bool finite_input) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  // Otherwise rows of whole vectors (the phased layout; stride 1 is one phase), with
  // grad_output copied into rows of the same padded width, zeros past out_w.
  const int64_t m = p.out_per_group(), taps = p.kernel_plane();
  const bool flat = finite_input && p.stride_h == 1 && p.stride_w == 1;
  const DepthwiseLayout l = flat ? flat_layout(V, p.out_h, p.out_w, p.kernel_h, p.kernel_w, p.dilation_h,
                                               p.dilation_w, p.pad_top, p.pad_left)
                                 : phased_layout(p, V);
  const int64_t vectors = static_cast<int64_t>(l.start.size());
  const WeightRows rows = flat ? WeightRows{1, vectors, 0} : WeightRows{p.out_h, l.pitch / V, p.out_w % V};
  const BatchChunks chunking(p.batch);
  const int64_t chunks = chunking.count;
  std::vector<T> partials(chunks * p.out_channels * taps, T(0));
  std::vector<double> bias_partials(grad_bias ? chunks * p.out_channels : 0, 0.0);
  at::parallel_for(0, chunks * p.in_channels, 1, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> staged(l.plane), lines(l.lines);
    AlignedBuffer<T> gy(vectors * V);
    AlignedBuffer<T> lanes(m * taps * V);  // the task's m planes' vectors of partial sums
    for (int64_t task = begin; task < end; ++task) {  // task = chunk * C_in + c
      const int64_t chunk = task / p.in_channels, c = task % p.in_channels;
      std::fill(lanes.data(), lanes.data() + m * taps * V, T(0));
      for (int64_t n = chunking.begin(chunk); n < chunking.begin(chunk + 1); ++n) {
        stage<T, B>(input + (n * p.in_channels + c) * p.in_plane(), 1, p.in_h, p.in_w, l, lines.data(),
                    staged.data());
        for (int64_t j = 0; j < m; ++j) {
          const int64_t oc = c * m + j;
          const T* src = grad_output + (n * p.out_channels + oc) * p.out_plane();
          for (int64_t oh = 0; oh < p.out_h; ++oh)
            copy_short<T, B>(src + oh * p.out_w, p.out_w, gy.data() + oh * l.pitch);
          weight_plane<T, B>(staged.data(), l, gy.data(), rows, lanes.data() + j * taps * V);
          if (grad_bias) bias_partials[chunk * p.out_channels + oc] += vector_sum<B, T>(src, p.out_plane());
        }
      }
      for (int64_t i = 0; i < m * taps; ++i)
        partials[(chunk * p.out_channels + c * m) * taps + i] = lane_sum<T, B>(load_vec<B>(lanes.data() + i * V));
    }
  });
  // The chunks' partial sums, added in chunk order (deterministic whatever the thread count).
  for (int64_t i = 0; i < p.out_channels * taps; ++i) {
    T sum = 0;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += partials[chunk * p.out_channels * taps + i];
    grad_weight[i] = sum;
  }
  for (int64_t oc = 0; grad_bias && oc < p.out_channels; ++oc) {
    double sum = 0;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += bias_partials[chunk * p.out_channels + oc];
    grad_bias[oc] = static_cast<T>(sum);
  }
}
}  // namespace
}  // namespace cpu
}  // namespace cnnext
