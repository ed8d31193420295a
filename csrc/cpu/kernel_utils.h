// Helpers shared by the CPU kernels that are the same for every ISA: batch
// chunking, aligned scratch buffers, and the "staging" copy that turns every
// border case into plain in-bounds reads. Per-ISA code includes this before
// its target pragma (isa_prelude.h), so these are compiled for the baseline
// ISA only; the vector helpers compiled per ISA are in vec.h.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <new>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "../params.h"

namespace cnnext {
namespace cpu {

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Reductions over the batch (grad_weight, the bias gradient) sum each chunk of
// the batch into its own partial sum and add the partials in chunk order. The
// chunks depend on the batch size alone, never on the thread count, so the
// result is bitwise the same whatever torch.set_num_threads says; their number
// is above the usual thread counts, so that every thread has a chunk to sum.
struct BatchChunks {
  static constexpr int64_t kMaxChunks = 8;
  int64_t batch, count;

  explicit BatchChunks(int64_t batch) : batch(batch), count(std::clamp<int64_t>(batch, 1, kMaxChunks)) {}
  // Chunk i is samples [begin(i), begin(i + 1)).
  int64_t begin(int64_t i) const { return i * batch / count; }
  // Samples of the largest chunk.
  int64_t max_size() const { return (batch + count - 1) / count; }
};

// std::allocator, except that it leaves elements constructed without arguments
// default-initialized (uninitialized, for floats): for arrays that a parallel
// loop writes in full before anything reads them (packed weights), which
// value-initialization would first zero in the calling thread alone, a pass
// over memory as long as the parallel writes'.
template <typename T>
struct UninitializedAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <class U>
  UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

template <typename T>
using UninitializedVector = std::vector<T, UninitializedAllocator<T>>;

// A zero-filled, 64-byte (cache line) aligned scratch array, whatever the
// ISA: a vector load from a buffer aligned less than the vector straddles two
// cache lines and costs twice as much, which std::vector's 16-byte alignment
// would make the rule for AVX2's and AVX-512's vectors.
template <typename T>
class AlignedBuffer {
 public:
  explicit AlignedBuffer(int64_t size) : data_(allocate(size)) {
    std::fill(data_, data_ + size, T(0));
  }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  T* data() { return data_; }
  const T* data() const { return data_; }

 private:
  static T* allocate(int64_t size) {
    // A size whose bytes would not fit in int64 can only fail, and must not wrap around first.
    if (size > (INT64_MAX - 64) / int64_t(sizeof(T))) throw std::bad_alloc();
    T* data = static_cast<T*>(std::aligned_alloc(64, round_up(std::max<int64_t>(size, 1) * sizeof(T), 64)));
    if (data == nullptr) throw std::bad_alloc();
    return data;
  }

  T* data_;
};

// One axis of a staging buffer that keeps only the positions the windows
// read (see Staging): staged index i = o * taps + k holds virtual position
// o * step + k * dilation, the k-th tap of window o. taps == 0: not gathered,
// staged index i is virtual position i.
struct Gather {
  int64_t taps = 0, step = 0, dilation = 0;

  int64_t position(int64_t i) const { return taps == 0 ? i : i / taps * step + i % taps * dilation; }
};

// How a set of planes is copied into a zero-filled staging buffer:
// staged[y][x] = src[(Y - off_y) / up_y][(X - off_x) / up_x], where Y and X
// are the virtual positions of y and x (gather_y, gather_x), where that is
// an exact in-range source position, else 0. Offsets may be negative (the
// source is cropped). up > 1 interleaves zeros, which turns a transposed,
// strided convolution into a plain stride-1 one.
struct Staging {
  int64_t rows, cols;
  int64_t off_y, off_x;
  int64_t up_y, up_x;
  Gather gather_y{}, gather_x{};
};

// [lo, hi): source indices s with 0 <= s * up + off < limit.
inline void staged_source_range(int64_t src_size, int64_t off, int64_t up, int64_t limit, int64_t& lo,
                                int64_t& hi) {
  lo = off >= 0 ? 0 : ceil_div_nonneg(-off, up);
  hi = limit - off <= 0 ? 0 : std::min(src_size, ceil_div_nonneg(limit - off, up));
  if (hi < lo) hi = lo;
}

// The source index staged index i of an axis holds, or -1 for a zero.
inline int64_t staged_source(const Gather& g, int64_t i, int64_t off, int64_t up, int64_t src_size) {
  const int64_t v = g.position(i) - off;
  return v >= 0 && v % up == 0 && v / up < src_size ? v / up : -1;
}

// Zeroes what a pixel-major staging's copy of the source leaves unwritten
// (`channels` elements per pixel): where the source is copied straight
// (neither spread out nor gathered), only the margins around its rows
// [y_lo, y_hi) x columns [x_lo, x_hi) (staged_source_range); else everything.
// Zeroing the copied rectangle too wrote each staged value twice.
template <typename T>
void zero_unstaged(T* dst, int64_t channels, const Staging& s, int64_t y_lo, int64_t y_hi, int64_t x_lo,
                   int64_t x_hi) {
  const int64_t row = s.cols * channels;
  if (s.up_y != 1 || s.up_x != 1 || s.gather_y.taps != 0 || s.gather_x.taps != 0 || y_hi <= y_lo || x_hi <= x_lo) {
    std::fill(dst, dst + s.rows * row, T(0));
    return;
  }
  const int64_t y0 = y_lo + s.off_y, y1 = y_hi + s.off_y;
  const int64_t x0 = (x_lo + s.off_x) * channels, x1 = (x_hi + s.off_x) * channels;
  std::fill(dst, dst + y0 * row, T(0));
  for (int64_t y = y0; y < y1; ++y) {
    std::fill(dst + y * row, dst + y * row + x0, T(0));
    std::fill(dst + y * row + x1, dst + (y + 1) * row, T(0));
  }
  std::fill(dst + y1 * row, dst + s.rows * row, T(0));
}

// `src` holds `channels` planes of src_h x src_w: NCHW planes (pixel_stride 1),
// or channels_last pixels pixel_stride elements apart with the channels side by
// side (element (c, y, x) at src[(y * src_w + x) * pixel_stride + c]), which
// staging transposes into planes.
template <typename T>
void stage_planes(const T* src, int64_t channels, int64_t src_h, int64_t src_w, const Staging& s, T* dst,
                  int64_t pixel_stride = 1) {
  const int64_t channel_stride = pixel_stride == 1 ? src_h * src_w : 1;
  // All of it, not zero_unstaged's margins only: a plane's are a few elements per row, fills too
  // short to beat one memset.
  std::fill(dst, dst + channels * s.rows * s.cols, T(0));
  if (s.gather_y.taps != 0 || s.gather_x.taps != 0) {
    // Gathered (windows far apart): element by element, at most what the kernels read anyway.
    std::vector<int64_t> src_x(s.cols);
    for (int64_t x = 0; x < s.cols; ++x) src_x[x] = staged_source(s.gather_x, x, s.off_x, s.up_x, src_w);
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t y = 0; y < s.rows; ++y) {
        const int64_t sy = staged_source(s.gather_y, y, s.off_y, s.up_y, src_h);
        if (sy < 0) continue;
        const T* in = src + c * channel_stride + sy * src_w * pixel_stride;
        T* out = dst + (c * s.rows + y) * s.cols;
        for (int64_t x = 0; x < s.cols; ++x) {
          if (src_x[x] >= 0) out[x] = in[src_x[x] * pixel_stride];
        }
      }
    }
    return;
  }
  int64_t y_lo, y_hi, x_lo, x_hi;
  staged_source_range(src_h, s.off_y, s.up_y, s.rows, y_lo, y_hi);
  staged_source_range(src_w, s.off_x, s.up_x, s.cols, x_lo, x_hi);
  const int64_t plane = s.rows * s.cols;
  if (pixel_stride != 1) {
    // channels_last: a pixel's channels are one run of memory, a channel's pixels pixel_stride
    // apart. Taking each pixel's channels a block at a time reads the source in whole runs and
    // writes one row per plane of the block in turn; a plane at a time read every pixel's cache
    // line once per channel, and the sample (larger than L1) from L2 as often.
    constexpr int64_t kBlock = 16;
    for (int64_t sy = y_lo; sy < y_hi; ++sy) {
      const T* in = src + sy * src_w * pixel_stride;
      T* out = dst + (sy * s.up_y + s.off_y) * s.cols + s.off_x;
      for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
        const int64_t n = std::min(kBlock, channels - c0);
        for (int64_t sx = x_lo; sx < x_hi; ++sx) {
          const T* pixel = in + sx * pixel_stride + c0;
          T* at = out + c0 * plane + sx * s.up_x;
          for (int64_t c = 0; c < n; ++c) at[c * plane] = pixel[c];
        }
      }
    }
    return;
  }
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t sy = y_lo; sy < y_hi; ++sy) {
      const T* in = src + c * src_h * src_w + sy * src_w;
      T* out = dst + c * plane + (sy * s.up_y + s.off_y) * s.cols + s.off_x;
      if (s.up_x == 1) {
        std::memcpy(out + x_lo, in + x_lo, (x_hi - x_lo) * sizeof(T));
      } else {
        for (int64_t sx = x_lo; sx < x_hi; ++sx) out[sx * s.up_x] = in[sx];
      }
    }
  }
}

// fn(sy, sx, y, x) for every staged pixel (y, x) of a gathered staging (windows far apart) that
// holds source pixel (sy, sx): the pixel-major stagings copy those pixel by pixel.
template <typename Fn>
void for_each_gathered_pixel(const Staging& s, int64_t src_h, int64_t src_w, const Fn& fn) {
  std::vector<int64_t> src_x(s.cols);
  for (int64_t x = 0; x < s.cols; ++x) src_x[x] = staged_source(s.gather_x, x, s.off_x, s.up_x, src_w);
  for (int64_t y = 0; y < s.rows; ++y) {
    const int64_t sy = staged_source(s.gather_y, y, s.off_y, s.up_y, src_h);
    for (int64_t x = 0; sy >= 0 && x < s.cols; ++x)
      if (src_x[x] >= 0) fn(sy, src_x[x], y, x);
  }
}

// The staging of stage_planes for a channels_last source, pixel-major: staged pixel (y, x)'s
// channels side by side at dst[(y * s.cols + x) * channels]. Copies whole pixels (a row of them
// at once where the source's are contiguous) instead of transposing them into planes.
template <typename T>
void stage_pixels(const T* src, int64_t channels, int64_t src_h, int64_t src_w, const Staging& s, T* dst,
                  int64_t pixel_stride) {
  int64_t y_lo, y_hi, x_lo, x_hi;
  staged_source_range(src_h, s.off_y, s.up_y, s.rows, y_lo, y_hi);
  staged_source_range(src_w, s.off_x, s.up_x, s.cols, x_lo, x_hi);
  zero_unstaged(dst, channels, s, y_lo, y_hi, x_lo, x_hi);
  const auto copy_pixel = [&](int64_t sy, int64_t sx, int64_t y, int64_t x) {
    std::memcpy(dst + (y * s.cols + x) * channels, src + (sy * src_w + sx) * pixel_stride, channels * sizeof(T));
  };
  if (s.gather_y.taps != 0 || s.gather_x.taps != 0) return for_each_gathered_pixel(s, src_h, src_w, copy_pixel);
  for (int64_t sy = y_lo; sy < y_hi; ++sy) {
    const int64_t y = sy * s.up_y + s.off_y;
    if (s.up_x == 1 && pixel_stride == channels) {
      if (x_hi > x_lo)
        std::memcpy(dst + (y * s.cols + x_lo + s.off_x) * channels, src + (sy * src_w + x_lo) * channels,
                    (x_hi - x_lo) * channels * sizeof(T));
      continue;
    }
    for (int64_t sx = x_lo; sx < x_hi; ++sx) copy_pixel(sy, sx, y, sx * s.up_x + s.off_x);
  }
}

}  // namespace cpu
}  // namespace cnnext
