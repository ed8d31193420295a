// The geometry of a direct convolution pass, shared by the plan
// (conv2d_plan.cpp) and the kernels: which correlation a pass runs and how
// its operand planes are staged. ISA-neutral: the vector width is a run-time
// argument (`lanes`), so the per-ISA translation units include this before
// their target pragma and every copy of these inline functions is the same.
//
// Every pass is a correlation of staged planes: forward correlates the
// zero-padded input with the weights; grad_input correlates grad_output,
// spread out by the stride and padded, with the flipped, channel-transposed
// weights (a stride-1 correlation); grad_weight correlates the padded input
// with grad_output and reduces over the batch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "../../params.h"
#include "../kernel_utils.h"

namespace cnnext {
namespace cpu {

// A stride-`stride` correlation of `channels` staged planes (rows x cols)
// with a kh x kw kernel, producing out_h x out_w pixels.
struct Correlation {
  int64_t channels;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t dilation_h, dilation_w;
  int64_t out_h, out_w;
  // Flat: stride 1, the staged planes are read as one long row (see pixel_vectors_flat.h).
  bool flat;
  Staging staging;

  int64_t taps() const { return channels * kernel_h * kernel_w; }
};

// One axis of the staging: its size, and the stride and dilation the kernels
// use along it.
struct StagedAxis {
  int64_t size, stride, dilation;
  Gather gather;
};

// The smaller of two layouts of an axis with `outs` windows of `taps` taps:
// the virtual positions as they are, (outs - 1) * stride + (taps - 1) *
// dilation + 1 of them, which grows with the stride and the dilation however
// little the windows read (a 1 x 1 output at stride 10^6 would stage 15
// million columns for its padding lanes); or gathered, only the positions the
// windows read, window after window: outs * taps of them, read at stride
// `taps` and dilation 1. Gathered wins only where the windows leave gaps:
// never with dilation 1 and a stride no larger than the kernel, never at
// stride 1 with a dilation below the output size.
inline StagedAxis staged_axis(int64_t outs, int64_t taps, int64_t stride, int64_t dilation) {
  int64_t as_is = 0, gathered = 0;
  // (taps - 1) * dilation is below the dilated kernel, which the op checked.
  const bool as_is_overflows = __builtin_mul_overflow(outs - 1, stride, &as_is) ||
                               __builtin_add_overflow(as_is, (taps - 1) * dilation + 1, &as_is);
  const bool gathered_overflows = __builtin_mul_overflow(outs, taps, &gathered);
  if (!as_is_overflows && (gathered_overflows || as_is <= gathered)) return {as_is, stride, dilation, {}};
  // Both overflowing: a size no allocation can satisfy (AlignedBuffer throws).
  return {gathered_overflows ? INT64_MAX : gathered, taps, 1, {taps, stride, dilation}};
}

// Staging geometry of `c` for a source placed at (off_y, off_x), upsampled by
// (up_y, up_x) (see Staging), for kernels with vectors of `lanes` elements.
// Row layout: every vector of outputs of a row reads in bounds. Flat layout:
// rows exactly as wide as the outputs need, so a plane is contiguous and only
// its end needs slack (staged_size); a gathered axis is not flat. Sets c's
// staging and the stride and dilation its kernels use.
inline void set_staging(Correlation& c, int64_t lanes, int64_t off_y, int64_t off_x, int64_t up_y, int64_t up_x) {
  const StagedAxis y = staged_axis(c.out_h, c.kernel_h, c.stride_h, c.dilation_h);
  StagedAxis x = staged_axis(c.out_w, c.kernel_w, c.stride_w, c.dilation_w);
  c.flat = c.flat && y.gather.taps == 0 && x.gather.taps == 0;
  if (!c.flat) x = staged_axis(round_up(c.out_w, lanes), c.kernel_w, c.stride_w, c.dilation_w);
  c.stride_h = y.stride, c.dilation_h = y.dilation;
  c.stride_w = x.stride, c.dilation_w = x.dilation;
  c.staging = {y.size, x.size, off_y, off_x, up_y, up_x, y.gather, x.gather};
}

// a * b * c, or INT64_MAX (a size no allocation satisfies) where that overflows.
inline int64_t saturating_product(int64_t a, int64_t b, int64_t c) {
  int64_t out = 0;
  return __builtin_mul_overflow(a, b, &out) || __builtin_mul_overflow(out, c, &out) ? INT64_MAX : out;
}

// Elements of the staging buffer: the planes plus, in the flat layout, the
// slack that the last vectors of the last plane read past its end (saturating).
inline int64_t staged_size(const Correlation& c, int64_t lanes) {
  const int64_t slack = c.flat ? lanes + (c.kernel_w - 1) * c.dilation_w : 0;
  const int64_t planes = saturating_product(c.channels, c.staging.rows, c.staging.cols);
  return planes > INT64_MAX - slack ? INT64_MAX : planes + slack;
}

// Output positions the flat kernels compute: every staged column of every
// output row, rounded up to whole vectors.
inline int64_t flat_positions(const Correlation& c, int64_t lanes) {
  return round_up(c.out_h * c.staging.cols, lanes);
}

// The correlations of the three passes, staged for vectors of `lanes` elements;
// `flat` asks for the flat layout, granted at stride 1 where no axis is gathered.
inline Correlation forward_correlation(const Conv2dParams& p, int64_t lanes, bool flat) {
  Correlation c{p.in_per_group(), p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w,
                p.out_h, p.out_w, flat && p.stride_h == 1 && p.stride_w == 1, {}};
  set_staging(c, lanes, p.pad_top, p.pad_left, 1, 1);
  return c;
}

// dx[ci][y][x] = sum_{co,kh,kw} w[co][ci][KH-1-kh][KW-1-kw] * U[co][y + kh*dh][x + kw*dw], where U is
// grad_output with (stride - 1) zeros between pixels, shifted by dilation*(K-1) - pad.
inline Correlation grad_input_correlation(const Conv2dParams& p, int64_t lanes, bool flat) {
  Correlation c{p.out_per_group(), p.kernel_h, p.kernel_w, 1, 1, p.dilation_h, p.dilation_w, p.in_h, p.in_w, flat, {}};
  set_staging(c, lanes, p.dilation_h * (p.kernel_h - 1) - p.pad_top, p.dilation_w * (p.kernel_w - 1) - p.pad_left,
              p.stride_h, p.stride_w);
  return c;
}

// grad_weight's input staging. Unlike the others it keeps `flat` at any stride (ungathered): the
// channel-vector family asks for it to stage rows only as wide as the windows read.
inline Correlation grad_weight_correlation(const Conv2dParams& p, int64_t lanes, bool flat) {
  Correlation c{p.in_per_group(), p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w,
                p.out_h, p.out_w, flat, {}};
  set_staging(c, lanes, p.pad_top, p.pad_left, 1, 1);
  return c;
}

// The channel-vector kernels' addressing: the staged offset of each output
// pixel's window corner (base[oh * out_w + ow]), and of each reduction tap from
// it: channel-major, tap[(ch * kernel_h + kh) * kernel_w + kw] (dW's order), or
// kernel-major, tap[(kh * kernel_w + kw) * channels + ch] where a pass skips the
// border (the taps of one kernel position are then one run of the reduction,
// which a window wholly in the border skips: WindowClasses, WindowRect) or reads
// a pixel-major staging (a kernel position's taps are then one run of memory).
struct WindowOffsets {
  std::vector<int64_t> base, tap;

  // A source read in place (reads_source_as_is), channels_last: pixel q at q * pixel_stride, its
  // channels side by side.
  WindowOffsets(int64_t pixels, int64_t channels, int64_t pixel_stride) : base(pixels), tap(channels) {
    for (int64_t q = 0; q < pixels; ++q) base[q] = q * pixel_stride;
    for (int64_t ch = 0; ch < channels; ++ch) tap[ch] = ch;
  }

  // A pixel-major staging (stage_pixels: each staged pixel's channels side by side), kernel-major taps.
  static WindowOffsets of_pixels(const Correlation& c) {
    WindowOffsets o;
    o.base.resize(c.out_h * c.out_w);
    o.tap.resize(c.taps());
    const int64_t cols = c.staging.cols, channels = c.channels;
    for (int64_t oh = 0; oh < c.out_h; ++oh)
      for (int64_t ow = 0; ow < c.out_w; ++ow)
        o.base[oh * c.out_w + ow] = (oh * c.stride_h * cols + ow * c.stride_w) * channels;
    for (int64_t kh = 0; kh < c.kernel_h; ++kh)
      for (int64_t kw = 0; kw < c.kernel_w; ++kw)
        for (int64_t ch = 0; ch < channels; ++ch)
          o.tap[(kh * c.kernel_w + kw) * channels + ch] =
              (kh * c.dilation_h * cols + kw * c.dilation_w) * channels + ch;
    return o;
  }

  WindowOffsets(const Correlation& c, bool kernel_major) : base(c.out_h * c.out_w), tap(c.taps()) {
    const int64_t cols = c.staging.cols;
    for (int64_t oh = 0; oh < c.out_h; ++oh)
      for (int64_t ow = 0; ow < c.out_w; ++ow) base[oh * c.out_w + ow] = oh * c.stride_h * cols + ow * c.stride_w;
    for (int64_t ch = 0; ch < c.channels; ++ch)
      for (int64_t kh = 0; kh < c.kernel_h; ++kh)
        for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
          const int64_t t = kernel_major ? (kh * c.kernel_w + kw) * c.channels + ch : (ch * c.kernel_h + kh) * c.kernel_w + kw;
          tap[t] = ch * c.staging.rows * cols + kh * c.dilation_h * cols + kw * c.dilation_w;
        }
  }

 private:
  WindowOffsets() = default;
};

// The kernel positions [lo, hi) of each of `outs` windows along one staged axis
// (window o's tap k at o * stride + k * dilation) that read the source: staged
// at off, off + up, ..., off + (src - 1) * up; the others read the zero border.
inline std::vector<std::pair<int64_t, int64_t>> source_taps(int64_t outs, int64_t kernel, int64_t stride,
                                                            int64_t dilation, int64_t off, int64_t up, int64_t src) {
  std::vector<std::pair<int64_t, int64_t>> taps(outs);
  const int64_t last = off + (src - 1) * up;
  for (int64_t o = 0; o < outs; ++o) {
    int64_t lo = 0, hi = kernel;
    while (lo < kernel && o * stride + lo * dilation < off) ++lo;
    while (hi > lo && o * stride + (hi - 1) * dilation > last) --hi;
    taps[o] = {lo, hi};
  }
  return taps;
}

// A 1 x 1 correlation at stride 1 whose staging would copy its source as it is (no padding, no
// spreading out): pointwise layers' forward and grad_input.
inline bool reads_source_as_is(const Correlation& c, int64_t src_h, int64_t src_w) {
  const Staging& st = c.staging;
  return c.kernel_h == 1 && c.kernel_w == 1 && c.stride_h == 1 && c.stride_w == 1 && st.off_y == 0 &&
         st.off_x == 0 && st.up_y == 1 && st.up_x == 1 && st.gather_y.taps == 0 && st.gather_x.taps == 0 &&
         c.out_h == src_h && c.out_w == src_w;
}

// Output pixels rows [row_lo, row_hi) x columns [col_lo, col_hi); empty where lo >= hi.
struct WindowRect {
  int64_t row_lo, row_hi, col_lo, col_hi;

  // The smallest rectangle holding both (an empty one holds nothing: lo = outs, hi = 0).
  WindowRect hull(const WindowRect& o) const {
    return {std::min(row_lo, o.row_lo), std::max(row_hi, o.row_hi), std::min(col_lo, o.col_lo),
            std::max(col_hi, o.col_hi)};
  }
};

// Per kernel position (kh * kernel_w + kw): the smallest rectangle of output pixels holding every window
// whose tap there reads the source rather than the staging's zero border (source_taps). Along a gathered
// axis, every window.
inline std::vector<WindowRect> window_rects(const Correlation& c, int64_t src_h, int64_t src_w) {
  const Staging& st = c.staging;
  // Per kernel tap along one axis: [lo, hi) of the windows that read the source with it.
  auto axis = [](int64_t outs, int64_t kernel, int64_t stride, int64_t dilation, int64_t off, int64_t up,
                 int64_t src, bool gathered) {
    std::vector<std::pair<int64_t, int64_t>> range(kernel, gathered ? std::make_pair(int64_t{0}, outs)
                                                                     : std::make_pair(outs, int64_t{0}));
    if (gathered) return range;
    const auto taps = source_taps(outs, kernel, stride, dilation, off, up, src);
    for (int64_t o = 0; o < outs; ++o)
      for (int64_t k = taps[o].first; k < taps[o].second; ++k)
        range[k] = {std::min(range[k].first, o), std::max(range[k].second, o + 1)};
    return range;
  };
  const auto rows =
      axis(c.out_h, c.kernel_h, c.stride_h, c.dilation_h, st.off_y, st.up_y, src_h, st.gather_y.taps != 0);
  const auto cols =
      axis(c.out_w, c.kernel_w, c.stride_w, c.dilation_w, st.off_x, st.up_x, src_w, st.gather_x.taps != 0);
  std::vector<WindowRect> rects;
  for (const auto& r : rows)
    for (const auto& q : cols) rects.push_back({r.first, r.second, q.first, q.second});
  return rects;
}

// Output pixels sorted by which kernel rows [kh_lo, kh_hi) and columns
// [kw_lo, kw_hi) of their windows read the source rather than the staging's
// zero border (the padding, and the margins of a grad_input's upsampled
// grad_output): a class holds every pixel with the same ranges, `order` the
// pixels class after class (raster order within one), class k being order
// [begin[k], begin[k + 1]). On a 4 x 4 plane with a 3 x 3 kernel and padding 1,
// 44 of a window's 144 taps read the border; the kernels then skip them.
// Without a border (or along a gathered axis, whose positions are not planes')
// one class of every pixel.
struct WindowClasses {
  struct Window {
    int64_t kh_lo, kh_hi, kw_lo, kw_hi;
  };
  std::vector<Window> window;
  std::vector<int64_t> begin, order;
  int64_t border_taps = 0;  // taps of all windows together that read only the border

  WindowClasses(const Correlation& c, int64_t src_h, int64_t src_w) {
    const Staging& st = c.staging;
    const int64_t pixels = c.out_h * c.out_w;
    if (st.gather_y.taps != 0 || st.gather_x.taps != 0) {
      window.push_back({0, c.kernel_h, 0, c.kernel_w});
      begin = {0, pixels};
      for (int64_t q = 0; q < pixels; ++q) order.push_back(q);
      return;
    }
    const auto rows = source_taps(c.out_h, c.kernel_h, c.stride_h, c.dilation_h, st.off_y, st.up_y, src_h);
    const auto cols = source_taps(c.out_w, c.kernel_w, c.stride_w, c.dilation_w, st.off_x, st.up_x, src_w);
    // Each axis's distinct ranges, and the index of each window's range among them.
    auto distinct = [](const std::vector<std::pair<int64_t, int64_t>>& ranges, std::vector<int64_t>& index) {
      std::vector<std::pair<int64_t, int64_t>> d(ranges);
      std::sort(d.begin(), d.end());
      d.erase(std::unique(d.begin(), d.end()), d.end());
      for (const auto& r : ranges) index.push_back(std::lower_bound(d.begin(), d.end(), r) - d.begin());
      return d;
    };
    std::vector<int64_t> row_of, col_of;
    const auto row_ranges = distinct(rows, row_of), col_ranges = distinct(cols, col_of);
    const int64_t ncols = static_cast<int64_t>(col_ranges.size());
    std::vector<int64_t> size(row_ranges.size() * ncols, 0);
    for (int64_t oh = 0; oh < c.out_h; ++oh)
      for (int64_t ow = 0; ow < c.out_w; ++ow) ++size[row_of[oh] * ncols + col_of[ow]];
    std::vector<int64_t> next(size.size());
    for (int64_t k = 0, at = 0; k < static_cast<int64_t>(size.size()); ++k) {
      next[k] = at;
      if (size[k] == 0) continue;
      const auto& r = row_ranges[k / ncols];
      const auto& q = col_ranges[k % ncols];
      window.push_back({r.first, r.second, q.first, q.second});
      begin.push_back(at);
      border_taps += size[k] * (c.kernel_h * c.kernel_w - (r.second - r.first) * (q.second - q.first));
      at += size[k];
    }
    begin.push_back(pixels);
    order.resize(pixels);
    for (int64_t oh = 0; oh < c.out_h; ++oh)
      for (int64_t ow = 0; ow < c.out_w; ++ow) order[next[row_of[oh] * ncols + col_of[ow]]++] = oh * c.out_w + ow;
  }

  int64_t count() const { return static_cast<int64_t>(window.size()); }
};

// A batch of activations (an input, an output or a gradient of one) with
// `channels` channels per group: where channel ch of sample-and-group set
// (n * groups + g) begins, and how far apart its pixels are. NCHW planes
// (pixel stride 1), or channels_last: pixels of groups * channels elements,
// which the channel-vector kernels read through their pixel-major staging
// (stage_pixels) and write as rows of whole vectors.
struct Activations {
  int64_t groups, channels, plane;
  bool channels_last;

  int64_t pixel_stride() const { return channels_last ? groups * channels : 1; }
  int64_t offset(int64_t set, int64_t ch) const {
    return channels_last ? (set / groups * plane * groups + set % groups) * channels + ch : (set * channels + ch) * plane;
  }
};

// The zero-padded planes in which every window of a pass lies whole (rows from
// -pad_top, columns from -pad_left): im2col's padded-plane gather (im2col.h)
// and grad_input's scattered channel vectors (channel_vectors_scatter.h).
struct PaddedPlanes {
  int64_t rows, cols;
  explicit PaddedPlanes(const Conv2dParams& p)
      : rows((p.out_h - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1),
        cols((p.out_w - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1) {}
  int64_t plane() const { return rows * cols; }
};

// offsets[oh * OW + ow]: where output pixel (oh, ow) reads a padded plane at tap (0, 0).
inline void gather_offsets(const Conv2dParams& p, const PaddedPlanes& pp, int64_t* offsets) {
  for (int64_t oh = 0; oh < p.out_h; ++oh)
    for (int64_t ow = 0; ow < p.out_w; ++ow) offsets[oh * p.out_w + ow] = oh * p.stride_h * pp.cols + ow * p.stride_w;
}

}  // namespace cpu
}  // namespace cnnext
