// Direct convolution on the CPU: no column buffer. Each micro-kernel step
// computes kOcBlock output channels x kVec output pixels in registers while
// it walks the reduction (input channel, kernel row, kernel column), so
// every input load feeds kOcBlock FMAs. Borders never reach the inner
// loop: the input is first staged into a zero-padded copy (see Staging).
//
// grad_input is the same correlation run backwards: the gradient, spread out
// by the stride and padded, correlated with the flipped, channel-transposed
// weights. grad_weight reduces over the batch in per-chunk partial sums.
#include <ATen/Parallel.h>

#include <type_traits>
#include <vector>

#include "conv2d_kernels.h"
#include "kernel_utils.h"

namespace cnnext {
namespace cpu {
namespace {

constexpr int64_t kOcBlock = 8;
// Vectors of outputs per step of the flat micro-kernel: 8 channels x 2 vectors
// = 16 accumulators, which leaves AVX-512's other 16 registers for operands.
constexpr int64_t kFlatBlock = 2;
// Below this many multiply-adds per output element (input channels x kernel
// taps), moving outputs through scratch or staging buffers costs more than
// the lanes that direct row access wastes. Measured on the seed layers: 9
// and 27 (first layers) gain 1.1 - 1.4x from row access, 144 (16 channels,
// 3 x 3) loses 2%, 576 loses 10%.
constexpr int64_t kFewTaps = 64;
// What a thread's staged operands may take: about the L2 cache.
constexpr int64_t kL2Bytes = 768 << 10;

// A stride-`stride` correlation of `channels` staged planes (rows x cols)
// with a kh x kw kernel, producing out_h x out_w pixels.
struct Correlation {
  int64_t channels;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t dilation_h, dilation_w;
  int64_t out_h, out_w;
  // Flat: stride 1, the staged planes are read as one long row (see correlate_flat).
  bool flat;
  Staging staging;
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
// (up_y, up_x) (see Staging). Row layout: every vector of kVec outputs of a
// row reads in bounds. Flat layout: rows exactly as wide as the outputs need,
// so a plane is contiguous and only its end needs slack (staged_size); a
// gathered axis is not flat. Sets c's staging and the stride and dilation its
// kernels use.
template <typename T>
void set_staging(Correlation& c, int64_t off_y, int64_t off_x, int64_t up_y, int64_t up_x) {
  const StagedAxis y = staged_axis(c.out_h, c.kernel_h, c.stride_h, c.dilation_h);
  StagedAxis x = staged_axis(c.out_w, c.kernel_w, c.stride_w, c.dilation_w);
  c.flat = c.flat && y.gather.taps == 0 && x.gather.taps == 0;
  if (!c.flat) x = staged_axis(round_up(c.out_w, kVec<T>), c.kernel_w, c.stride_w, c.dilation_w);
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
template <typename T>
int64_t staged_size(const Correlation& c) {
  const int64_t slack = c.flat ? kVec<T> + (c.kernel_w - 1) * c.dilation_w : 0;
  const int64_t planes = saturating_product(c.channels, c.staging.rows, c.staging.cols);
  return planes > INT64_MAX - slack ? INT64_MAX : planes + slack;
}

// out[j][oh][ow] = bias[j] + sum_{c,kh,kw} w[c][kh][kw][j] * staged[c][oh*sh + kh*dh][ow*sw + kw*dw]
// for the first `valid` of kOcBlock channels; `w` is packed block-major.
template <typename T, bool kUnitStride>
CNNEXT_ISA_CLONES void correlate_block(const Correlation& c, const T* staged, const T* w, const T* bias,
                                       int64_t valid, T* out, int64_t out_plane) {
  constexpr int64_t V = kVec<T>;
  const int64_t cols = c.staging.cols;
  const int64_t taps = c.kernel_h * c.kernel_w;
  for (int64_t oh = 0; oh < c.out_h; ++oh) {
    for (int64_t ow0 = 0; ow0 < c.out_w; ow0 += V) {
      Vec<T> acc[kOcBlock] = {};
      for (int64_t ch = 0; ch < c.channels; ++ch) {
        const T* plane = staged + ch * c.staging.rows * cols;
        const T* wc = w + ch * taps * kOcBlock;
        for (int64_t kh = 0; kh < c.kernel_h; ++kh) {
          const T* row = plane + (oh * c.stride_h + kh * c.dilation_h) * cols + ow0 * c.stride_w;
          for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
            const T* x = row + kw * c.dilation_w;
            const T* wk = wc + (kh * c.kernel_w + kw) * kOcBlock;
            const Vec<T> xv = kUnitStride ? load_vec(x) : load_strided(x, c.stride_w);
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

// The stride-1 case, which covers grad_input of every convolution. With unit
// stride, output (oh, x) reads staged[ch][(oh + kh*dh) * cols + x + kw*dw]:
// over the flattened index f = oh * cols + x every tap is a constant offset.
// So the kernel computes all cols "virtual" columns of each output row (those
// past out_w read across row ends and are dropped), its vectors run over
// whole rows instead of stopping at each row's end, and narrow outputs
// (5 x 5, 11 x 11) waste few lanes. Results go to `scratch` (kOcBlock planes
// of flat_positions, rounded up to a vector), then the real columns to `out`.

// acc[j][u] = sum_{ch,kh,kw} w[ch][kh][kw][j] * the vector at staged[ch] + start[u] + kh*dh*cols + kw*dw:
// kBlock vectors of outputs that start at staged offsets start[u], all kOcBlock channels.
template <typename T, int64_t kBlock>
CNNEXT_INLINE void correlate_vectors(const Correlation& c, const T* staged, const T* w, const int64_t* start,
                                     Vec<T> (&acc)[kOcBlock][kBlock]) {
  const int64_t cols = c.staging.cols, plane = c.staging.rows * cols;
  const int64_t taps = c.kernel_h * c.kernel_w;
  for (int64_t ch = 0; ch < c.channels; ++ch) {
    const T* base = staged + ch * plane;
    const T* wc = w + ch * taps * kOcBlock;
    for (int64_t kh = 0; kh < c.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < c.kernel_w; ++kw) {
        const T* x = base + kh * c.dilation_h * cols + kw * c.dilation_w;
        const T* wk = wc + (kh * c.kernel_w + kw) * kOcBlock;
        Vec<T> xv[kBlock];
        for (int64_t u = 0; u < kBlock; ++u) xv[u] = load_vec(x + start[u]);
        for (int64_t j = 0; j < kOcBlock; ++j)
          for (int64_t u = 0; u < kBlock; ++u) acc[j][u] += wk[j] * xv[u];
      }
    }
  }
}

// kBlock vectors of outputs from flat position f0, all kOcBlock channels,
// into scratch planes `flat` apart.
template <typename T, int64_t kBlock>
CNNEXT_INLINE void flat_step(const Correlation& c, const T* staged, const T* w, int64_t f0, T* scratch, int64_t flat) {
  constexpr int64_t V = kVec<T>;
  int64_t start[kBlock];
  for (int64_t u = 0; u < kBlock; ++u) start[u] = f0 + u * V;
  Vec<T> acc[kOcBlock][kBlock] = {};
  correlate_vectors<T, kBlock>(c, staged, w, start, acc);
  for (int64_t j = 0; j < kOcBlock; ++j)
    for (int64_t u = 0; u < kBlock; ++u) store_vec(scratch + j * flat + f0 + u * V, acc[j][u]);
}

template <typename T>
int64_t flat_positions(const Correlation& c) {
  return round_up(c.out_h * c.staging.cols, kVec<T>);
}

// Steps of kFlatBlock vectors, and one of a single vector where the positions
// end half-way into a step: a single-vector step has the worse ratio of loads
// to FMAs (9 : 8 against 10 : 16 for 3 x 3) but computes a vector less.
// Measured against whole two-vector steps (one process, interleaved):
// lenet.conv3 forward (16 positions instead of 32) 1.42x, its grad_input (48
// instead of 64) 1.18x, lenet.conv2 forward (144 instead of 160) 1.06x, its
// grad_input (208 instead of 224) 1.05x.
template <typename T>
CNNEXT_ISA_CLONES void correlate_flat(const Correlation& c, const T* staged, const T* w, const T* bias,
                                      int64_t valid, T* out, int64_t out_plane, T* scratch) {
  constexpr int64_t V = kVec<T>;
  const int64_t flat = flat_positions<T>(c);
  int64_t f0 = 0;
  for (; f0 + kFlatBlock * V <= flat; f0 += kFlatBlock * V) flat_step<T, kFlatBlock>(c, staged, w, f0, scratch, flat);
  if (f0 < flat) flat_step<T, 1>(c, staged, w, f0, scratch, flat);
  const int64_t cols = c.staging.cols;
  for (int64_t j = 0; j < valid; ++j) {
    const T b = bias ? bias[j] : T(0);
    for (int64_t oh = 0; oh < c.out_h; ++oh) {
      transform_row(scratch + j * flat + oh * cols, c.out_w, out + j * out_plane + oh * c.out_w,
                    [b](auto v) { return v + b; });
    }
  }
}

// Stride 1, rows at least one vector wide. Each output row is covered by
// vectors starting at 0, V, 2V, ... and a last one that ends exactly at
// out_w (overlapping the one before it, whose lanes it recomputes), so every
// vector is stored whole and straight into the output. correlate_flat wastes
// fewer lanes but passes every output through its scratch planes: when a
// step has few FMAs (one or three input channels) that extra store and load
// per output costs more than the lanes saved.
template <typename T>
CNNEXT_ISA_CLONES void correlate_rows(const Correlation& c, const T* staged, const T* w, const T* bias,
                                      int64_t valid, T* out, int64_t out_plane) {
  constexpr int64_t V = kVec<T>;
  const int64_t cols = c.staging.cols;
  const int64_t last = c.out_w - V;
  for (int64_t oh = 0; oh < c.out_h; ++oh) {
    for (int64_t ow = 0; ow < c.out_w; ow += kFlatBlock * V) {
      int64_t start[kFlatBlock];  // the row's last vector ends at out_w
      for (int64_t u = 0; u < kFlatBlock; ++u) start[u] = std::min(ow + u * V, last);
      int64_t staged_start[kFlatBlock];
      for (int64_t u = 0; u < kFlatBlock; ++u) staged_start[u] = oh * cols + start[u];
      Vec<T> acc[kOcBlock][kFlatBlock] = {};
      correlate_vectors<T, kFlatBlock>(c, staged, w, staged_start, acc);
      for (int64_t j = 0; j < kOcBlock; ++j) {  // constant trip count: acc stays in registers
        if (j >= valid) break;
        const T b = bias ? bias[j] : T(0);
        T* dst = out + j * out_plane + oh * c.out_w;
        for (int64_t u = 0; u < kFlatBlock; ++u) store_vec(dst + start[u], acc[j][u] + b);
      }
    }
  }
}

template <typename T>
int64_t flat_scratch_size(const Correlation& c) {
  return c.flat ? kOcBlock * flat_positions<T>(c) : 0;
}

template <typename T>
void correlate(const Correlation& c, const T* staged, const T* w, const T* bias, int64_t valid, T* out,
               int64_t out_plane, T* scratch) {
  if (c.flat && c.out_w >= kVec<T> && c.channels * c.kernel_h * c.kernel_w < kFewTaps) {
    correlate_rows<T>(c, staged, w, bias, valid, out, out_plane);
  } else if (c.flat) {
    correlate_flat<T>(c, staged, w, bias, valid, out, out_plane, scratch);
  } else if (c.stride_w == 1) {
    correlate_block<T, true>(c, staged, w, bias, valid, out, out_plane);
  } else {
    correlate_block<T, false>(c, staged, w, bias, valid, out, out_plane);
  }
}

// Packs weights for correlate_block: packed[g][block][ch][kh][kw][j], zero
// for channels past the end of the last block. `at(g, oc, ch, kh, kw)` reads
// the source weight of output channel oc (within group g).
template <typename T, typename Fn>
std::vector<T> pack_weights(int64_t groups, int64_t outs, int64_t channels, int64_t kernel_h, int64_t kernel_w,
                            Fn at) {
  const int64_t blocks = (outs + kOcBlock - 1) / kOcBlock;
  const int64_t taps = kernel_h * kernel_w;
  std::vector<T> packed(groups * blocks * channels * taps * kOcBlock, T(0));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t oc = 0; oc < outs; ++oc)
      for (int64_t ch = 0; ch < channels; ++ch)
        for (int64_t kh = 0; kh < kernel_h; ++kh)
          for (int64_t kw = 0; kw < kernel_w; ++kw) {
            const int64_t block = g * blocks + oc / kOcBlock;
            packed[((block * channels + ch) * taps + kh * kernel_w + kw) * kOcBlock + oc % kOcBlock] =
                at(g, oc, ch, kh, kw);
          }
  return packed;
}

// Runs the correlation for every (sample, group, block of kOcBlock outputs),
// staging each sample's group planes once per thread.
template <typename T>
void correlate_batch(const Correlation& c, int64_t batch, int64_t groups, int64_t outs, const T* src,
                     int64_t src_h, int64_t src_w, const std::vector<T>& packed, const T* bias, T* dst) {
  const int64_t blocks = (outs + kOcBlock - 1) / kOcBlock;
  const int64_t block_weights = c.channels * c.kernel_h * c.kernel_w * kOcBlock;
  const int64_t out_plane = c.out_h * c.out_w;
  at::parallel_for(0, batch * groups * blocks, 1, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> staged(staged_size<T>(c));
    AlignedBuffer<T> scratch(flat_scratch_size<T>(c));
    int64_t staged_plane_set = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t set = task / blocks;  // = n * groups + g
      const int64_t block = task % blocks;
      if (set != staged_plane_set) {
        stage_planes(src + set * c.channels * src_h * src_w, c.channels, src_h, src_w, c.staging, staged.data());
        staged_plane_set = set;
      }
      const int64_t g = set % groups;
      const int64_t oc0 = block * kOcBlock;
      const int64_t valid = std::min(kOcBlock, outs - oc0);
      correlate(c, staged.data(), packed.data() + (g * blocks + block) * block_weights,
                bias ? bias + g * outs + oc0 : nullptr, valid, dst + (set * outs + oc0) * out_plane, out_plane,
                scratch.data());
    }
  });
}

// Channel vectors: vectors over output channels instead of pixels. A step
// holds kCoVecs vectors of output channels for kPix pixels and, per reduction
// tap (input channel, kernel row, kernel column), loads kCoVecs weight vectors
// (packed [group][tap][output channel]) and broadcasts one staged input value
// per pixel: 24 FMAs per 10 loads, against 16 per 10 in the pixel-vector
// kernels above, and every lane is an output however narrow the plane (9
// outputs of lenet.conv3 would take a 16-lane pixel vector). Needs output
// channels in whole vectors. Measured against the pixel-vector kernels (one
// process, interleaved; forward / grad_input / grad_weight): lenet.conv2
// 1.35 / 1.23 / 1.39x, cnn_pad.conv2 1.11 / 1.19 / 1.53x, cifar_bn.conv2
// 1.11 / 1.16 / 1.54x, the large layer 1.14 / 1.35 / 0.86x (see
// direct_grad_weight). With one vector of channels (cnn_small.conv2: 16) each
// broadcast feeds one FMA and loads bound the step (0.79 - 0.82x with 6 or 12
// pixels), and first layers (9 or 27 taps) measured 0.36 - 0.49x: those keep
// pixel vectors unless the plane is tiny.
constexpr int64_t kCvVectors = 4;
// Pixels (grad_weight: taps) per step: 24 accumulators in all (AVX-512 has 32
// registers), at most 12 pixels, each of which holds a pointer register.
constexpr int64_t cv_width(int64_t vectors) { return std::min<int64_t>(12, 24 / vectors); }

template <typename T>
bool use_channel_vectors(const Correlation& c, int64_t outs) {
  if (outs % kVec<T> != 0) return false;
  // Tiny: the pixel-vector kernels would compute over 4/3 of the outputs (flat positions or padded rows).
  const int64_t pixel_lanes = c.flat ? flat_positions<T>(c) : c.out_h * round_up(c.out_w, kVec<T>);
  const bool tiny = 4 * c.out_h * c.out_w < 3 * pixel_lanes;
  return tiny || (outs >= 2 * kVec<T> && c.channels * c.kernel_h * c.kernel_w >= kFewTaps);
}

// out[j*V + v][i] = bias[j*V + v] + sum_t w[t][j*V + v] * staged[base[i] + tap_offset[t]]
// for kCoVecs vectors of channels (planes out_plane apart) and kPix pixels; w rows w_stride apart.
template <typename T, int64_t kCoVecs, int64_t kPix>
CNNEXT_INLINE void channel_vector_step(const T* staged, const int64_t* base, const int64_t* tap_offset,
                                       int64_t taps, const T* w, int64_t w_stride, const T* bias, T* out,
                                       int64_t out_plane) {
  constexpr int64_t V = kVec<T>;
  Vec<T> acc[kCoVecs][kPix] = {};
  const T* x[kPix];
  for (int64_t i = 0; i < kPix; ++i) x[i] = staged + base[i];
  for (int64_t t = 0; t < taps; ++t, w += w_stride) {
    const int64_t off = tap_offset[t];
    Vec<T> wv[kCoVecs];
    for (int64_t j = 0; j < kCoVecs; ++j) wv[j] = load_vec(w + j * V);
    for (int64_t i = 0; i < kPix; ++i) {
      const T xs = x[i][off];
      for (int64_t j = 0; j < kCoVecs; ++j) acc[j][i] += wv[j] * xs;
    }
  }
  for (int64_t j = 0; j < kCoVecs; ++j) {
    for (int64_t v = 0; v < V; ++v) {
      const T b = bias ? bias[j * V + v] : T(0);
      T* dst = out + (j * V + v) * out_plane;
      for (int64_t i = 0; i < kPix; ++i) dst[i] = acc[j][i][v] + b;
    }
  }
}

// Pixels [p, pixels) of one block: steps of kPix pixels, then of kPix / 2, ... down to 1.
template <typename T, int64_t kCoVecs, int64_t kPix>
CNNEXT_INLINE void channel_vector_pixels(const Correlation& c, const T* staged, const int64_t* base,
                                         const int64_t* tap_offset, const T* w, int64_t w_stride, const T* bias,
                                         T* out, int64_t p) {
  const int64_t pixels = c.out_h * c.out_w, taps = c.channels * c.kernel_h * c.kernel_w;
  for (; p + kPix <= pixels; p += kPix)
    channel_vector_step<T, kCoVecs, kPix>(staged, base + p, tap_offset, taps, w, w_stride, bias, out + p, pixels);
  if constexpr (kPix > 1)
    channel_vector_pixels<T, kCoVecs, kPix / 2>(c, staged, base, tap_offset, w, w_stride, bias, out, p);
}

// All pixels of one block of kCoVecs vectors of output channels.
template <typename T, int64_t kCoVecs>
CNNEXT_ISA_CLONES void channel_vector_block(const Correlation& c, const T* staged, const int64_t* base,
                                            const int64_t* tap_offset, const T* w, int64_t w_stride,
                                            const T* bias, T* out) {
  channel_vector_pixels<T, kCoVecs, cv_width(kCoVecs)>(c, staged, base, tap_offset, w, w_stride, bias, out, 0);
}

// The channel-vector kernels' addressing: the staged offset of each output
// pixel's window corner (base[oh * out_w + ow]), and of each reduction tap from
// it (tap[(ch * kernel_h + kh) * kernel_w + kw]).
struct WindowOffsets {
  std::vector<int64_t> base, tap;

  explicit WindowOffsets(const Correlation& c)
      : base(c.out_h * c.out_w), tap(c.channels * c.kernel_h * c.kernel_w) {
    const int64_t cols = c.staging.cols;
    for (int64_t oh = 0; oh < c.out_h; ++oh)
      for (int64_t ow = 0; ow < c.out_w; ++ow) base[oh * c.out_w + ow] = oh * c.stride_h * cols + ow * c.stride_w;
    for (int64_t ch = 0; ch < c.channels; ++ch)
      for (int64_t kh = 0; kh < c.kernel_h; ++kh)
        for (int64_t kw = 0; kw < c.kernel_w; ++kw)
          tap[(ch * c.kernel_h + kh) * c.kernel_w + kw] =
              ch * c.staging.rows * cols + kh * c.dilation_h * cols + kw * c.dilation_w;
  }
};

// Weights for channel_vector_block: packed[g][ch][kh][kw][oc]; `at` as for pack_weights.
template <typename T, typename Fn>
std::vector<T> pack_channel_vector_weights(int64_t groups, int64_t outs, int64_t channels, int64_t kernel_h,
                                           int64_t kernel_w, Fn at) {
  const int64_t taps = channels * kernel_h * kernel_w;
  std::vector<T> packed(groups * taps * outs);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t ch = 0; ch < channels; ++ch)
      for (int64_t kh = 0; kh < kernel_h; ++kh)
        for (int64_t kw = 0; kw < kernel_w; ++kw)
          for (int64_t oc = 0; oc < outs; ++oc)
            packed[((g * channels + ch) * kernel_h * kernel_w + kh * kernel_w + kw) * outs + oc] =
                at(g, oc, ch, kh, kw);
  return packed;
}

// correlate_batch with channel vectors: every (sample, group, block of kCvVectors vectors of outputs).
template <typename T>
void channel_vector_batch(const Correlation& c, int64_t batch, int64_t groups, int64_t outs, const T* src,
                          int64_t src_h, int64_t src_w, const std::vector<T>& packed, const T* bias, T* dst) {
  constexpr int64_t block_outs = kCvVectors * kVec<T>;
  const int64_t blocks = (outs + block_outs - 1) / block_outs;
  const int64_t taps = c.channels * c.kernel_h * c.kernel_w, out_plane = c.out_h * c.out_w;
  const WindowOffsets offsets(c);
  const std::vector<int64_t>& base = offsets.base;
  const std::vector<int64_t>& tap_offset = offsets.tap;
  at::parallel_for(0, batch * groups * blocks, 1, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> staged(staged_size<T>(c));
    int64_t staged_plane_set = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t set = task / blocks;  // = n * groups + g
      const int64_t oc0 = task % blocks * block_outs;
      if (set != staged_plane_set) {
        stage_planes(src + set * c.channels * src_h * src_w, c.channels, src_h, src_w, c.staging, staged.data());
        staged_plane_set = set;
      }
      const int64_t g = set % groups;
      const T* w = packed.data() + g * taps * outs + oc0;
      const T* b = bias ? bias + g * outs + oc0 : nullptr;
      T* out = dst + (set * outs + oc0) * out_plane;
      switch (std::min(kCvVectors, (outs - oc0) / kVec<T>)) {
        case 4: channel_vector_block<T, 4>(c, staged.data(), base.data(), tap_offset.data(), w, outs, b, out); break;
        case 3: channel_vector_block<T, 3>(c, staged.data(), base.data(), tap_offset.data(), w, outs, b, out); break;
        case 2: channel_vector_block<T, 2>(c, staged.data(), base.data(), tap_offset.data(), w, outs, b, out); break;
        default: channel_vector_block<T, 1>(c, staged.data(), base.data(), tap_offset.data(), w, outs, b, out);
      }
    }
  });
}

// How grad_weight reads grad_output rows, and keeps a row's last vector to
// the row's outputs.
enum class GyRows {
  // Copied into rows padded with zeros to whole vectors: the padding lanes
  // multiply inputs past the row's end by zero. Only for finite inputs.
  kCopied,
  // The same, and those input lanes cleared as well, since 0 * inf = NaN.
  // Clearing made the middle layers 1.25 - 1.33x slower, so finite inputs skip it.
  kCopiedMasked,
  // In place: the last vector is moved back to end at out_w, and the lanes
  // it shares with the vector before are cleared in both operands.
  kInPlace,
};

// Operands of grad_weight for a few samples of one group: the staged input
// planes, and grad_output of one block of kOcBlock channels, either in place
// (whole blocks only) or copied into rows padded to a multiple of kVec and
// channels padded to whole blocks, zeros in the padding.
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
// for one block of kOcBlock output channels and kTaps neighbouring kernel columns, for every ch
// and kh. The kTaps input vectors are loaded once per step and each feeds kOcBlock FMAs, each
// grad_output vector feeds kTaps; the sum runs over several samples so that it is long enough
// to pay for the final horizontal additions.
//
// Vectors run along output rows; see GyRows for how a row's last vector is
// kept to the row's outputs.
template <typename T, bool kUnitStride, int64_t kTaps, GyRows kRows>
CNNEXT_ISA_CLONES void weight_grad_block(const Correlation& c, const WeightGradBatch<T>& b, int64_t valid,
                                         int64_t kw0, T* partial) {
  constexpr int64_t V = kVec<T>;
  const int64_t cols = c.staging.cols;
  const int64_t taps = c.kernel_h * c.kernel_w;
  const int64_t last = (c.out_w - 1) / V * V;  // ow0 of a row's last vector
  constexpr bool kInPlace = kRows == GyRows::kInPlace;
  // Locals, not loads through `b` on every row: the row loop is most of the work on 5 - 14-pixel rows.
  const int64_t gy_plane = b.gy_plane, gy_cols = b.gy_cols, gy_sample = b.gy_sample;
  const int64_t staged_sample = b.staged_sample, samples = b.samples;
  const int64_t x_step = c.stride_w;
  const Bits<T> last_keep = kInPlace ? lane_mask<T>(V - (c.out_w - last), V) : lane_mask<T>(0, c.out_w - last);
  // Left to itself, GCC folds each grad_output load into every FMA that uses
  // it (kTaps loads instead of one), and loads, not FMAs, then bound the loop.
  // Adding a zero it cannot see through keeps the loaded vector in a register.
  Vec<T> opaque_zero = {};
  asm("" : "+m"(opaque_zero));
  for (int64_t ch = 0; ch < c.channels; ++ch) {
    for (int64_t kh = 0; kh < c.kernel_h; ++kh) {
      Vec<T> acc[kOcBlock][kTaps] = {};
      for (int64_t s = 0; s < samples; ++s) {
        const T* plane = b.staged + s * staged_sample + ch * c.staging.rows * cols;
        for (int64_t oh = 0; oh < c.out_h; ++oh) {
          const T* row = plane + (oh * c.stride_h + kh * c.dilation_h) * cols + kw0 * c.dilation_w;
          const T* g = b.gy + s * gy_sample + oh * gy_cols;
          for (int64_t ow0 = 0; ow0 < c.out_w; ow0 += V) {
            const bool tail = ow0 == last;
            const int64_t start = kInPlace && tail ? c.out_w - V : ow0;
            Vec<T> xv[kTaps];
            for (int64_t k = 0; k < kTaps; ++k) {
              const T* x = row + k * c.dilation_w;
              xv[k] = kUnitStride ? load_vec(x + start) : load_strided(x + start * x_step, x_step);
              if (kRows != GyRows::kCopied && tail) xv[k] = keep_lanes<T>(xv[k], last_keep);
            }
            for (int64_t j = 0; j < kOcBlock; ++j) {
              Vec<T> gv = load_vec(g + j * gy_plane + start);
              gv = kInPlace && tail ? keep_lanes<T>(gv, last_keep) : gv + opaque_zero;
              for (int64_t k = 0; k < kTaps; ++k) acc[j][k] += gv * xv[k];
            }
          }
        }
      }
      for (int64_t j = 0; j < valid; ++j) {
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
template <typename T>
CNNEXT_ISA_CLONES void copy_rows(const T* src, int64_t rows, int64_t width, T* dst, int64_t dst_cols) {
  for (int64_t r = 0; r < rows; ++r, src += width, dst += dst_cols) {
    transform_row(src, width, dst, [](auto v) { return v; });
  }
}

// All kernel columns of one block, up to three at a time (8 x 3 accumulators fill AVX-512's registers).
template <typename T, bool kUnitStride, GyRows kRows>
void weight_grad_columns(const Correlation& c, const WeightGradBatch<T>& b, int64_t valid, T* partial) {
  for (int64_t kw0 = 0; kw0 < c.kernel_w; kw0 += 3) {
    switch (std::min<int64_t>(3, c.kernel_w - kw0)) {
      case 3:
        weight_grad_block<T, kUnitStride, 3, kRows>(c, b, valid, kw0, partial);
        break;
      case 2:
        weight_grad_block<T, kUnitStride, 2, kRows>(c, b, valid, kw0, partial);
        break;
      default:
        weight_grad_block<T, kUnitStride, 1, kRows>(c, b, valid, kw0, partial);
    }
  }
}

template <typename T, GyRows kRows>
void weight_grad_columns(const Correlation& c, const WeightGradBatch<T>& b, int64_t valid, T* partial) {
  if (c.stride_w == 1) {
    weight_grad_columns<T, true, kRows>(c, b, valid, partial);
  } else {
    weight_grad_columns<T, false, kRows>(c, b, valid, partial);
  }
}

// The sum of x[0:n] in T, in four independent vector chains: one chain is
// bound by the add latency (4 cycles a vector), not by the loads.
template <typename T>
CNNEXT_ISA_CLONES T vector_sum(const T* x, int64_t n) {
  constexpr int64_t V = kVec<T>;
  if (n < V) {  // tiny planes (3 x 3): a vector's horizontal sum would cost more than the plane
    T sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += x[i];
    return sum;
  }
  Vec<T> acc[4] = {};
  int64_t i = 0;
  for (; i + 4 * V <= n; i += 4 * V)
    for (int64_t u = 0; u < 4; ++u) acc[u] += load_vec(x + i + u * V);
  for (; i + V <= n; i += V) acc[0] += load_vec(x + i);
  const Vec<T> all = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  T sum = 0;
  for (int64_t v = 0; v < V; ++v) sum += all[v];
  for (; i < n; ++i) sum += x[i];
  return sum;
}

// Whether x[0:n] holds no infinity or NaN: x * 0 is 0 for finite x and NaN
// otherwise, so the sum of x * 0 tells, without a branch per element.
template <typename T>
CNNEXT_ISA_CLONES bool all_finite_range(const T* x, int64_t n) {
  constexpr int64_t V = kVec<T>;
  Vec<T> acc[4] = {};
  int64_t i = 0;
  for (; i + 4 * V <= n; i += 4 * V)
    for (int64_t u = 0; u < 4; ++u) acc[u] += load_vec(x + i + u * V) * T(0);
  T sum = 0;
  for (; i < n; ++i) sum += x[i] * T(0);
  const Vec<T> all = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (int64_t v = 0; v < V; ++v) sum += all[v];
  return sum == T(0);
}

template <typename T>
bool all_finite(const T* x, int64_t n) {
  return at::parallel_reduce(
      0, n, 1 << 16, true,
      [&](int64_t begin, int64_t end, bool ok) { return ok && all_finite_range(x + begin, end - begin); },
      [](bool a, bool b) { return a && b; });
}


// Every (sample, group) of dst = the correlation of src with the weights `at`
// gives (as for pack_weights), with channel vectors where use_channel_vectors
// holds and pixel vectors otherwise: forward and grad_input both run this.
template <typename T, typename Fn>
void correlate_all(const Correlation& c, int64_t batch, int64_t groups, int64_t outs, const T* src, int64_t src_h,
                   int64_t src_w, Fn at, const T* bias, T* dst) {
  if (use_channel_vectors<T>(c, outs)) {
    const auto packed = pack_channel_vector_weights<T>(groups, outs, c.channels, c.kernel_h, c.kernel_w, at);
    channel_vector_batch(c, batch, groups, outs, src, src_h, src_w, packed, bias, dst);
  } else {
    const auto packed = pack_weights<T>(groups, outs, c.channels, c.kernel_h, c.kernel_w, at);
    correlate_batch(c, batch, groups, outs, src, src_h, src_w, packed, bias, dst);
  }
}

// The batch cut into BatchChunks: add(first, last, partial, bias_partial) adds samples
// [first, last) into its own zeroed partial grad_weight (and bias sums, in double, or null
// without grad_bias); the partials are then added in chunk order. No two threads add into the
// same memory, and the result depends neither on scheduling nor on the thread count.
template <typename T, typename Fn>
void sum_over_batch_chunks(const Conv2dParams& p, T* grad_weight, T* grad_bias, const Fn& add) {
  const int64_t weight_numel = p.out_channels * p.in_per_group() * p.kernel_plane();
  const BatchChunks chunking(p.batch);
  const int64_t chunks = chunking.count;
  std::vector<T> partials(chunks * weight_numel, T(0));
  std::vector<double> bias_partials(grad_bias ? chunks * p.out_channels : 0, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      add(chunking.begin(chunk), chunking.begin(chunk + 1), partials.data() + chunk * weight_numel,
          grad_bias ? bias_partials.data() + chunk * p.out_channels : nullptr);
    }
  });
  at::parallel_for(0, weight_numel, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T sum = 0;
      for (int64_t t = 0; t < chunks; ++t) sum += partials[t * weight_numel + i];
      grad_weight[i] = sum;
    }
  });
  for (int64_t oc = 0; grad_bias && oc < p.out_channels; ++oc) {
    double sum = 0;
    for (int64_t t = 0; t < chunks; ++t) sum += bias_partials[t * p.out_channels + oc];
    grad_bias[oc] = static_cast<T>(sum);
  }
}

// bias_partial[oc] += the sum of plane oc of `count` samples of one group (`gy` at its first channel).
template <typename T>
void add_plane_sums(const Conv2dParams& p, const T* gy, int64_t count, double* bias_partial) {
  for (int64_t s = 0; s < count; ++s)
    for (int64_t oc = 0; oc < p.out_per_group(); ++oc)
      bias_partial[oc] += vector_sum(gy + (s * p.out_channels + oc) * p.out_plane(), p.out_plane());
}

// grad_weight with channel vectors (tiny planes, see channel_vector_step):
// partial[oc][t] += sum_{s,p} gyT[s][p][oc] * staged[s][base[p] + tap_offset[t]] for kCoVecs
// vectors of output channels and kTaps reduction taps; gyT holds grad_output with the channels
// of each pixel side by side (gy_pixel apart), so the reduction over samples and pixels needs
// no horizontal sums.
template <typename T, int64_t kCoVecs, int64_t kTaps>
CNNEXT_INLINE void channel_vector_weight_step(const T* staged, int64_t staged_sample, const T* gyT, int64_t gy_pixel,
                                              int64_t gy_sample, int64_t samples, const int64_t* base,
                                              int64_t pixels, const int64_t* tap_offset, T* partial,
                                              int64_t partial_stride) {
  constexpr int64_t V = kVec<T>;
  Vec<T> acc[kCoVecs][kTaps] = {};
  for (int64_t s = 0; s < samples; ++s) {
    const T* x[kTaps];
    for (int64_t k = 0; k < kTaps; ++k) x[k] = staged + s * staged_sample + tap_offset[k];
    const T* g = gyT + s * gy_sample;
    for (int64_t q = 0; q < pixels; ++q, g += gy_pixel) {
      Vec<T> gv[kCoVecs];
      for (int64_t j = 0; j < kCoVecs; ++j) gv[j] = load_vec(g + j * V);
      for (int64_t k = 0; k < kTaps; ++k) {
        const T xs = x[k][base[q]];
        for (int64_t j = 0; j < kCoVecs; ++j) acc[j][k] += gv[j] * xs;
      }
    }
  }
  for (int64_t j = 0; j < kCoVecs; ++j)
    for (int64_t v = 0; v < V; ++v)
      for (int64_t k = 0; k < kTaps; ++k) partial[(j * V + v) * partial_stride + k] += acc[j][k][v];
}

// Taps [t, taps) of one block: steps of kTaps taps, then of kTaps / 2, ... down to 1.
template <typename T, int64_t kCoVecs, int64_t kTaps>
CNNEXT_INLINE void channel_vector_weight_taps(const T* staged, int64_t staged_sample, const T* gyT, int64_t gy_pixel,
                                              int64_t gy_sample, int64_t samples, const int64_t* base,
                                              int64_t pixels, const int64_t* tap_offset, int64_t taps, T* partial,
                                              int64_t t) {
  for (; t + kTaps <= taps; t += kTaps)
    channel_vector_weight_step<T, kCoVecs, kTaps>(staged, staged_sample, gyT, gy_pixel, gy_sample, samples, base,
                                                  pixels, tap_offset + t, partial + t, taps);
  if constexpr (kTaps > 1)
    channel_vector_weight_taps<T, kCoVecs, kTaps / 2>(staged, staged_sample, gyT, gy_pixel, gy_sample, samples, base,
                                                      pixels, tap_offset, taps, partial, t);
}

// All taps of one block of kCoVecs vectors of output channels.
template <typename T, int64_t kCoVecs>
CNNEXT_ISA_CLONES void channel_vector_weight_block(const T* staged, int64_t staged_sample, const T* gyT,
                                                   int64_t gy_pixel, int64_t gy_sample, int64_t samples,
                                                   const int64_t* base, int64_t pixels, const int64_t* tap_offset,
                                                   int64_t taps, T* partial) {
  channel_vector_weight_taps<T, kCoVecs, cv_width(kCoVecs)>(staged, staged_sample, gyT, gy_pixel, gy_sample, samples,
                                                            base, pixels, tap_offset, taps, partial, 0);
}

// direct_grad_weight with channel vectors, for layers where use_channel_vectors holds.
template <typename T>
void channel_vector_grad_weight(const Conv2dParams& p, const Correlation& c, const T* grad_output, const T* input,
                                T* grad_weight, T* grad_bias) {
  constexpr int64_t block_outs = kCvVectors * kVec<T>;
  const int64_t cin = p.in_per_group(), cout = p.out_per_group(), pixels = p.out_plane();
  const int64_t taps = cin * p.kernel_plane();
  const int64_t staged_sample = cin * c.staging.rows * c.staging.cols, gy_sample = pixels * cout;
  const WindowOffsets offsets(c);
  const std::vector<int64_t>& base = offsets.base;
  const std::vector<int64_t>& tap_offset = offsets.tap;
  // Samples staged together: as many as fit in the L2 budget, so each pass over the taps reads
  // them from there; up to 32, for long reductions per partial-sum update.
  const int64_t stage_samples = std::clamp<int64_t>(
      kL2Bytes / ((staged_sample + gy_sample) * static_cast<int64_t>(sizeof(T))), 1, 32);
  sum_over_batch_chunks(p, grad_weight, grad_bias, [&](int64_t first, int64_t last, T* partial, double* bias_partial) {
    AlignedBuffer<T> staged(stage_samples * staged_sample);
    AlignedBuffer<T> gyT(stage_samples * gy_sample);
    for (int64_t n0 = first; n0 < last; n0 += stage_samples) {
      const int64_t count = std::min(stage_samples, last - n0);
      for (int64_t g = 0; g < p.groups; ++g) {
        const T* group_gy = grad_output + (n0 * p.out_channels + g * cout) * pixels;
        if (bias_partial) add_plane_sums(p, group_gy, count, bias_partial + g * cout);
        for (int64_t s = 0; s < count; ++s) {
          stage_planes(input + ((n0 + s) * p.in_channels + g * cin) * p.in_plane(), cin, p.in_h, p.in_w, c.staging,
                       staged.data() + s * staged_sample);
          for (int64_t oc = 0; oc < cout; ++oc)
            for (int64_t q = 0; q < pixels; ++q)
              gyT.data()[s * gy_sample + q * cout + oc] = group_gy[(s * p.out_channels + oc) * pixels + q];
        }
        for (int64_t oc0 = 0; oc0 < cout; oc0 += block_outs) {
          T* dst = partial + (g * cout + oc0) * taps;
          const T* g0 = gyT.data() + oc0;
          const auto block = [&](auto vecs) {
            channel_vector_weight_block<T, decltype(vecs)::value>(staged.data(), staged_sample, g0, cout, gy_sample,
                                                                  count, base.data(), pixels, tap_offset.data(),
                                                                  taps, dst);
          };
          switch (std::min(kCvVectors, (cout - oc0) / kVec<T>)) {
            case 4: block(std::integral_constant<int64_t, 4>()); break;
            case 3: block(std::integral_constant<int64_t, 3>()); break;
            case 2: block(std::integral_constant<int64_t, 2>()); break;
            default: block(std::integral_constant<int64_t, 1>());
          }
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void direct_forward(const Conv2dParams& p, const T* input, const T* weight, const T* bias, T* output) {
  const int64_t cin = p.in_per_group(), cout = p.out_per_group();
  Correlation c{cin, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w,
                p.out_h, p.out_w, p.stride_h == 1 && p.stride_w == 1, {}};
  set_staging<T>(c, p.pad_top, p.pad_left, 1, 1);
  const auto weight_at = [&](int64_t g, int64_t oc, int64_t ch, int64_t kh, int64_t kw) {
    return weight[((g * cout + oc) * cin + ch) * p.kernel_plane() + kh * p.kernel_w + kw];
  };
  correlate_all(c, p.batch, p.groups, cout, input, p.in_h, p.in_w, weight_at, bias, output);
}

template <typename T>
void direct_grad_input(const Conv2dParams& p, const T* grad_output, const T* weight, T* grad_input) {
  // dx[ci][y][x] = sum_{co,kh,kw} w[co][ci][KH-1-kh][KW-1-kw] * U[co][y + kh*dh][x + kw*dw], where U is
  // grad_output with (stride - 1) zeros between pixels, shifted by dilation*(K-1) - pad.
  const int64_t cin = p.in_per_group(), cout = p.out_per_group();
  Correlation c{cout, p.kernel_h, p.kernel_w, 1, 1, p.dilation_h, p.dilation_w, p.in_h, p.in_w, true, {}};
  set_staging<T>(c, p.dilation_h * (p.kernel_h - 1) - p.pad_top, p.dilation_w * (p.kernel_w - 1) - p.pad_left,
                 p.stride_h, p.stride_w);
  const auto weight_at = [&](int64_t g, int64_t ci, int64_t co, int64_t kh, int64_t kw) {
    return weight[((g * cout + co) * cin + ci) * p.kernel_plane() + (p.kernel_h - 1 - kh) * p.kernel_w +
                  (p.kernel_w - 1 - kw)];
  };
  const T* no_bias = nullptr;
  correlate_all(c, p.batch, p.groups, cin, grad_output, p.out_h, p.out_w, weight_at, no_bias, grad_input);
}

float plane_sum(const float* x, int64_t n) { return vector_sum(x, n); }
double plane_sum(const double* x, int64_t n) { return vector_sum(x, n); }

template <typename T>
void direct_grad_weight(const Conv2dParams& p, const T* grad_output, const T* input, T* grad_weight,
                        T* grad_bias) {
  const int64_t cin = p.in_per_group(), cout = p.out_per_group();
  const int64_t blocks = (cout + kOcBlock - 1) / kOcBlock;
  Correlation c{cin, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w,
                p.out_h, p.out_w, false, {}};
  Correlation flat_c = c;
  flat_c.flat = p.stride_h == 1 && p.stride_w == 1;
  // Channel vectors where use_channel_vectors holds for the better of the pixel layouts below, and
  // two staged samples with their grad_output fit in the L2 budget: the taps are passed over
  // once per group of staged samples (the large layer, 1.6 MB of grad_output per sample, 0.86x).
  Correlation cv = c;
  cv.flat = true;  // staged rows only as wide as the windows need: nothing reads vectors along them
  set_staging<T>(c, p.pad_top, p.pad_left, 1, 1);
  set_staging<T>(flat_c, p.pad_top, p.pad_left, 1, 1);
  set_staging<T>(cv, p.pad_top, p.pad_left, 1, 1);
  const int64_t cv_planes = saturating_product(cin, cv.staging.rows, cv.staging.cols);
  const int64_t cv_sample = cv_planes > kL2Bytes ? kL2Bytes : cv_planes + p.out_plane() * cout;
  if (use_channel_vectors<T>(c, cout) && (!flat_c.flat || use_channel_vectors<T>(flat_c, cout)) &&
      2 * cv_sample * static_cast<int64_t>(sizeof(T)) <= kL2Bytes) {
    channel_vector_grad_weight(p, cv, grad_output, input, grad_weight, grad_bias);
    return;
  }
  // grad_output is copied into rows padded to whole vectors (so no load
  // crosses a row) and channels padded to whole blocks, except where there is
  // little work per element to hide the copy behind: few input channels, rows
  // of at least one vector, whole blocks. Measured: in place is 1.35x faster
  // on the 1-channel first layers, 1.07x on the 3-channel one, and 10% slower
  // on the 64-channel large layer.
  const bool in_place = p.out_w >= kVec<T> && cin * p.kernel_plane() < kFewTaps && cout % kOcBlock == 0;
  const bool finite_input = in_place || all_finite(input, p.batch * p.in_channels * p.in_plane());
  // Flat (stride 1, finite input): as correlate_flat, the reduction runs over
  // f = oh * cols + ow, where cols is the staged input's row pitch, so one
  // vector spans several narrow rows; grad_output is copied at that pitch with
  // zeros past each row's out_w (so it needs a finite input: see GyRows).
  // Taken where it needs fewer vectors than rows padded to whole vectors.
  // Measured: lenet.conv2 (11 x 11 outputs, 9 vectors instead of 11) 1.33x,
  // cnn_small.conv2 1.08x, lenet.conv3 (one vector instead of three) 1.34x,
  // though im2col stays faster there.
  const int64_t flat_len = round_up(p.out_h * flat_c.staging.cols, kVec<T>);
  const bool flat = !in_place && finite_input && flat_c.flat &&
                    flat_len < p.out_h * round_up(p.out_w, kVec<T>);
  if (flat) {
    c = flat_c;
    c.out_h = 1;  // one "row" of flat_len positions
    c.out_w = flat_len;
  }
  const int64_t gy_cols = in_place ? p.out_w : flat ? flat_len : round_up(p.out_w, kVec<T>);
  const int64_t gy_pitch = flat ? flat_len : p.out_h * gy_cols;  // elements between copied channels
  // Flat reads run up to a vector (plus the kernel's width) past a sample's last plane.
  const int64_t staged_sample = staged_size<T>(c);
  const int64_t gy_sample = in_place ? 0 : blocks * kOcBlock * gy_pitch;
  // Samples staged together: up to 8, for long reductions that pay for the
  // final horizontal sums, as many as fit in the L2 budget.
  const int64_t stage_samples = std::clamp<int64_t>(
      kL2Bytes / ((std::min(staged_sample, kL2Bytes) + gy_sample) * static_cast<int64_t>(sizeof(T))), 1, 8);
  sum_over_batch_chunks(p, grad_weight, grad_bias, [&](int64_t first, int64_t last, T* partial, double* bias_partial) {
    AlignedBuffer<T> staged(stage_samples * staged_sample);
    AlignedBuffer<T> gy(stage_samples * gy_sample);
    // Adds samples [n0, n0 + count) of group g.
    auto add_samples = [&](int64_t n0, int64_t count, int64_t g) {
      const T* group_gy = grad_output + (n0 * p.out_channels + g * cout) * p.out_plane();
      // First, so the planes come into cache for the pass below.
      if (bias_partial) add_plane_sums(p, group_gy, count, bias_partial + g * cout);
      for (int64_t s = 0; s < count; ++s) {
        const int64_t n = n0 + s;
        stage_planes(input + (n * p.in_channels + g * cin) * p.in_plane(), cin, p.in_h, p.in_w, c.staging,
                     staged.data() + s * staged_sample);
        if (flat) {
          for (int64_t oc = 0; oc < cout; ++oc)
            copy_rows(group_gy + (s * p.out_channels + oc) * p.out_plane(), p.out_h, p.out_w,
                      gy.data() + s * gy_sample + oc * gy_pitch, c.staging.cols);
        } else if (!in_place) {
          copy_rows(group_gy + s * p.out_channels * p.out_plane(), cout * p.out_h, p.out_w,
                    gy.data() + s * gy_sample, gy_cols);
        }
      }
      for (int64_t block = 0; block < blocks; ++block) {
        const int64_t oc0 = block * kOcBlock;
        T* dst = partial + (g * cout + oc0) * cin * p.kernel_plane();
        const int64_t valid = std::min(kOcBlock, cout - oc0);
        if (in_place) {
          const WeightGradBatch<T> b{staged.data(), staged_sample, group_gy + oc0 * p.out_plane(),
                                     p.out_channels * p.out_plane(), p.out_plane(), gy_cols, count};
          weight_grad_columns<T, GyRows::kInPlace>(c, b, valid, dst);
        } else {
          const WeightGradBatch<T> b{staged.data(), staged_sample, gy.data() + oc0 * gy_pitch,
                                     gy_sample, gy_pitch, gy_cols, count};
          if (finite_input) {
            weight_grad_columns<T, GyRows::kCopied>(c, b, valid, dst);
          } else {
            weight_grad_columns<T, GyRows::kCopiedMasked>(c, b, valid, dst);
          }
        }
      }
    };
    for (int64_t n0 = first; n0 < last; n0 += stage_samples)
      for (int64_t g = 0; g < p.groups; ++g) add_samples(n0, std::min(stage_samples, last - n0), g);
  });
}

#define CNNEXT_INSTANTIATE(T)                                                                  \
  template void direct_forward<T>(const Conv2dParams&, const T*, const T*, const T*, T*);     \
  template void direct_grad_input<T>(const Conv2dParams&, const T*, const T*, T*);            \
  template void direct_grad_weight<T>(const Conv2dParams&, const T*, const T*, T*, T*);
CNNEXT_INSTANTIATE(float)
CNNEXT_INSTANTIATE(double)
#undef CNNEXT_INSTANTIATE

}  // namespace cpu
}  // namespace cnnext
