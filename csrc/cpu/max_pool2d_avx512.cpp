// AVX-512 max-pool forward: the rows loop and the flat loop
// (max_pool2d_simd.h).
//
// Everything defined after the target pragma below is compiled for AVX-512,
// so nothing after it may be an inline function that other files also use
// (torch, the standard library): the linker keeps one copy of each inline
// function for the whole library, and an AVX-512 copy could end up serving
// callers on CPUs without AVX-512. Headers included before the pragma
// (params.h) keep the baseline ISA.
#include "max_pool2d_simd.h"  // and params.h (first_inside, valid_outputs): before the pragma, baseline ISA

#include <stdexcept>

#ifdef CNNEXT_X86_SIMD

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl")
#endif

#include <immintrin.h>

#include "max_pool2d_flat_loop.h"

namespace cnnext {
namespace cpu {
namespace {

// 16 float outputs per step; offsets and the winning offsets as 16 int32.
struct F32x16 {
  using T = float;
  using Val = __m512;
  using Off = __m512i;
  using Arg = __m512i;
  using Mask = __mmask16;
  static constexpr int64_t kLanes = 16;

  static Off load_offsets(const int32_t* p) { return _mm512_loadu_si512(p); }
  static Off add(Off a, int64_t b) { return _mm512_add_epi32(a, _mm512_set1_epi32(static_cast<int32_t>(b))); }
  static Off add(Off a, Off b) { return _mm512_add_epi32(a, b); }
  static Arg to_arg(Off off) { return off; }
  static Mask inside(Off off) { return _mm512_cmpge_epi32_mask(off, _mm512_setzero_si512()); }
  static Val lowest() { return _mm512_set1_ps(-__builtin_inff()); }
  static Mask lanes(int64_t lo, int64_t hi) { return Mask(((1u << hi) - 1) & ~((1u << lo) - 1)); }
  // Offsets first, first + step, ..., first + 15 * step.
  static Off offsets(int64_t first, int step) {
    return _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(first)),
                            _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32(step)));
  }
  // Which of the kStride * kLanes elements from p lanes [lo, hi) need:
  // elements l * kStride for l in [lo, hi).
  template <int kStride>
  static uint32_t load_bits(int64_t lo, int64_t hi) {
    const int64_t end = kStride * (hi - 1) + 1;
    return uint32_t(((uint64_t(1) << end) - 1) & ~((uint64_t(1) << (kStride * lo)) - 1));
  }
  // Lane l gets p[l * kStride] where `bits` says so, else -inf. Elements
  // outside `bits` are never touched (masked loads do not fault).
  template <int kStride>
  static Val load(const float* p, uint32_t bits) {
    if constexpr (kStride == 1) {
      return _mm512_mask_loadu_ps(lowest(), Mask(bits), p);
    } else {
      static_assert(kStride == 2, "rows loop: stride 1 or 2");
      return evens(_mm512_mask_loadu_ps(lowest(), Mask(bits), p),
                   _mm512_mask_loadu_ps(lowest(), Mask(bits >> 16), p + 16));
    }
  }
  // The even and the odd elements of the 32 in a (first) and b.
  static Val evens(Val a, Val b) {
    return _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), b);
  }
  static Val odds(Val a, Val b) {
    return _mm512_permutex2var_ps(a, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), b);
  }
  static Val load(const float* p) { return _mm512_loadu_ps(p); }
  static Val load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static Off splat(int64_t v) { return _mm512_set1_epi32(static_cast<int32_t>(v)); }
  static Val gather(Mask m, Off off, const float* base) { return _mm512_mask_i32gather_ps(lowest(), m, off, base, 4); }
  // PyTorch's rule: a value replaces the best so far if it is larger or NaN.
  static Mask wins(Mask m, Val v, Val best) {
    return _mm512_mask_cmp_ps_mask(m, v, best, _CMP_GT_OQ) | _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
  }
  static Val select(Mask m, Val a, Val b) { return _mm512_mask_mov_ps(b, m, a); }
  static Arg select_arg(Mask m, Arg a, Arg b) { return _mm512_mask_mov_epi32(b, m, a); }
  static void store(float* y, int64_t* idx, Val v, Arg arg, int64_t n) {
    const Mask m = n >= kLanes ? Mask(0xFFFF) : Mask((1u << n) - 1);
    _mm512_mask_storeu_ps(y, m, v);
    _mm512_mask_storeu_epi64(idx, __mmask8(m), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(arg)));
    _mm512_mask_storeu_epi64(idx + 8, __mmask8(m >> 8), _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(arg, 1)));
  }
};

// 8 double outputs per step; offsets stay 8 int32.
struct F64x8 {
  using T = double;
  using Val = __m512d;
  using Off = __m256i;
  using Arg = __m256i;
  using Mask = __mmask8;
  static constexpr int64_t kLanes = 8;

  static Off load_offsets(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static Off add(Off a, int64_t b) { return _mm256_add_epi32(a, _mm256_set1_epi32(static_cast<int32_t>(b))); }
  static Off add(Off a, Off b) { return _mm256_add_epi32(a, b); }
  static Arg to_arg(Off off) { return off; }
  static Mask inside(Off off) { return _mm256_cmpge_epi32_mask(off, _mm256_setzero_si256()); }
  static Val lowest() { return _mm512_set1_pd(-__builtin_inf()); }
  static Mask lanes(int64_t lo, int64_t hi) { return Mask(((1u << hi) - 1) & ~((1u << lo) - 1)); }
  static Off offsets(int64_t first, int step) {
    return _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(first)),
                            _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(step)));
  }
  template <int kStride>
  static uint32_t load_bits(int64_t lo, int64_t hi) {
    return F32x16::load_bits<kStride>(lo, hi);
  }
  template <int kStride>
  static Val load(const double* p, uint32_t bits) {
    if constexpr (kStride == 1) {
      return _mm512_mask_loadu_pd(lowest(), Mask(bits), p);
    } else {
      static_assert(kStride == 2, "rows loop: stride 1 or 2");
      return evens(_mm512_mask_loadu_pd(lowest(), Mask(bits), p),
                   _mm512_mask_loadu_pd(lowest(), Mask(bits >> 8), p + 8));
    }
  }
  static Val evens(Val a, Val b) { return _mm512_permutex2var_pd(a, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), b); }
  static Val odds(Val a, Val b) { return _mm512_permutex2var_pd(a, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), b); }
  static Val load(const double* p) { return _mm512_loadu_pd(p); }
  static Val load(const double* p, Mask m) { return _mm512_maskz_loadu_pd(m, p); }
  static Off splat(int64_t v) { return _mm256_set1_epi32(static_cast<int32_t>(v)); }
  static Val gather(Mask m, Off off, const double* base) { return _mm512_mask_i32gather_pd(lowest(), m, off, base, 8); }
  static Mask wins(Mask m, Val v, Val best) {
    return _mm512_mask_cmp_pd_mask(m, v, best, _CMP_GT_OQ) | _mm512_mask_cmp_pd_mask(m, v, v, _CMP_UNORD_Q);
  }
  static Val select(Mask m, Val a, Val b) { return _mm512_mask_mov_pd(b, m, a); }
  static Arg select_arg(Mask m, Arg a, Arg b) { return _mm256_mask_mov_epi32(b, m, a); }
  static void store(double* y, int64_t* idx, Val v, Arg arg, int64_t n) {
    const Mask m = n >= kLanes ? Mask(0xFF) : Mask((1u << n) - 1);
    _mm512_mask_storeu_pd(y, m, v);
    _mm512_mask_storeu_epi64(idx, m, _mm512_cvtepi32_epi64(arg));
  }
};

// The rows loop walks each plane in column blocks of kLanes outputs; the
// lanes each kernel column kw can read (and the matching load masks) depend
// only on the block, so they are worked out once per block, not per tap.
template <class V, int kStride>
struct ColumnBlock {
  int64_t col[kRowsMaxKernelW];  // input column of lane 0, per kw
  typename V::Mask inside[kRowsMaxKernelW];
  uint32_t load_bits[kRowsMaxKernelW];
  // Per lane, the window's first in-bounds column: with the first in-bounds
  // row, the index PyTorch reports when nothing beats -inf.
  typename V::Off first_col;

  ColumnBlock(const Pool2dParams& p, int64_t ow0, int64_t n) {
    alignas(64) int32_t first[V::kLanes] = {};
    for (int64_t l = 0; l < n; ++l) {
      const int64_t w0 = (ow0 + l) * kStride - p.pad_w;
      first[l] = static_cast<int32_t>(w0 + first_inside(w0, p.dilation_w) * p.dilation_w);
    }
    first_col = V::load_offsets(first);
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      // Lanes l in [lo, hi) read columns inside the input.
      const TapRange r = valid_outputs(kw, p.in_w, ow0 + n, kStride, p.pad_w, p.dilation_w);
      const int64_t lo = r.lo > ow0 ? r.lo - ow0 : 0, hi = r.hi > ow0 ? r.hi - ow0 : 0;
      col[kw] = ow0 * kStride - p.pad_w + kw * p.dilation_w;
      inside[kw] = lo < hi ? V::lanes(lo, hi) : typename V::Mask(0);
      load_bits[kw] = lo < hi ? V::template load_bits<kStride>(lo, hi) : 0;
    }
  }
};

// The hardware prefetchers of the AMD Zen CPUs this was measured on do not
// follow masked loads: without this, pooling a tensor that does not fit in
// the L2 cache ran 3x slower (lenet.pool1, 13 MB: 4.3 ms -> 1.4 ms on one
// core). Rows are fetched this many output rows ahead, past the end of a
// plane into the next one; prefetches never fault.
constexpr int64_t kPrefetchOutputRows = 4;

inline void prefetch_row(const void* p, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(static_cast<const char*>(p) + b, _MM_HINT_T0);
}

template <class V, int kStride>
void max_pool2d_rows(const Pool2dParams& p, const typename V::T* x, int64_t planes, typename V::T* y, int64_t* idx) {
  using Mask = typename V::Mask;
  const int64_t in_plane = p.in_h * p.in_w, out_plane = p.out_h * p.out_w;
  const int64_t prefetch_ahead = kPrefetchOutputRows * p.stride_h * p.in_w;
  for (int64_t plane = 0; plane < planes; ++plane) {
    const typename V::T* in = x + plane * in_plane;
    for (int64_t ow0 = 0; ow0 < p.out_w; ow0 += V::kLanes) {
      const int64_t n = p.out_w - ow0 < V::kLanes ? p.out_w - ow0 : V::kLanes;
      const ColumnBlock<V, kStride> block(p, ow0, n);
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        const int64_t h0 = oh * p.stride_h - p.pad_h;
        const int64_t first_row = h0 + first_inside(h0, p.dilation_h) * p.dilation_h;
        typename V::Val best = V::lowest();
        typename V::Off arg = V::add(block.first_col, first_row * p.in_w);
        // Only the rows inside the input: a kernel may be 2^31 tall.
        for (int64_t kh = first_inside(h0, p.dilation_h); kh < p.kernel_h && h0 + kh * p.dilation_h < p.in_h; ++kh) {
          const int64_t h = h0 + kh * p.dilation_h;
          for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
            const Mask inside = block.inside[kw];
            if (inside == 0) continue;
            const int64_t first = h * p.in_w + block.col[kw];
            // `in + first` may lie before the row (left padding): the lanes
            // that would read there are masked off and never touch memory.
            if (kw == 0) prefetch_row(in + first + prefetch_ahead, kStride * V::kLanes * int64_t(sizeof(*in)));
            const typename V::Val v = V::template load<kStride>(in + first, block.load_bits[kw]);
            const Mask win = V::wins(inside, v, best);
            best = V::select(win, v, best);
            arg = V::select_arg(win, V::offsets(first, kStride), arg);
          }
        }
        const int64_t o = plane * out_plane + oh * p.out_w + ow0;
        V::store(y + o, idx + o, best, arg, n);
      }
    }
  }
}

// 2 x 2 windows with stride 2 or 1, no padding or dilation, every window
// inside the input (see is_pool_2x2): the pooling of most CNNs, all five of
// the seed models'. With the geometry fixed, the four taps of a row of
// outputs are loaded (stride 2: and split into even and odd columns) up
// front, their offsets are constants, and only the compare-and-select chain
// is sequential: stride 2, 0.29 ns per output on cache-resident planes
// against 0.89 for max_pool2d_rows (one core).
// Same scan order and rule as PyTorch: a later tap wins if larger or NaN.
template <class V, int kStride>
void max_pool2d_2x2(const Pool2dParams& p, const typename V::T* x, int64_t planes, typename V::T* y, int64_t* idx) {
  using T = typename V::T;
  using Val = typename V::Val;
  using Mask = typename V::Mask;
  constexpr int64_t L = V::kLanes;
  const int64_t in_w = p.in_w, out_w = p.out_w, out_h = p.out_h;
  const int64_t in_plane = p.in_h * in_w, out_plane = out_h * out_w;
  // Offsets of the windows of a vector from its first (kStride * lane), and
  // of the taps from a window's corner.
  const typename V::Off windows = V::offsets(0, kStride);
  const typename V::Off tap_offset[4] = {V::splat(0), V::splat(1), V::splat(in_w), V::splat(in_w + 1)};
  // Prefetch about 4 KB ahead, in whole rows: the prefetchers do not follow
  // masked loads (see kPrefetchOutputRows), and 4 rows ahead is too close
  // for a 13 MB tensor (lenet.pool1: 1.39 -> 0.81 ns per output, one core).
  const int64_t ahead = (4096 / int64_t(sizeof(T)) + in_w - 1) / in_w * in_w;
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T* in = x + plane * in_plane;
    for (int64_t ow0 = 0; ow0 < out_w; ow0 += L) {
      const int64_t n = out_w - ow0 < L ? out_w - ow0 : L;
      // The inputs of n windows in each row: 2n of them in two vectors
      // (stride 2), or n + 1 in a vector and the one shifted by one (stride 1).
      const uint32_t bits = uint32_t((uint64_t(1) << (kStride == 2 ? 2 * n : n)) - 1);
      const Mask lo = Mask(bits), hi = Mask(bits >> L);
      for (int64_t oh = 0; oh < out_h; ++oh) {
        const int64_t first = kStride * (oh * in_w + ow0);
        const T* r0 = in + first;
        const T* r1 = r0 + in_w;
        prefetch_row(r0 + ahead, kStride * L * int64_t(sizeof(T)));
        prefetch_row(r1 + ahead, kStride * L * int64_t(sizeof(T)));
        Val tap[4];
        if constexpr (kStride == 2) {
          Val a0, b0, a1, b1;
          if (n == L) {  // plain loads where the whole vector is inside
            a0 = V::load(r0), b0 = V::load(r0 + L), a1 = V::load(r1), b1 = V::load(r1 + L);
          } else {
            a0 = V::load(r0, lo), b0 = V::load(r0 + L, hi), a1 = V::load(r1, lo), b1 = V::load(r1 + L, hi);
          }
          tap[0] = V::evens(a0, b0), tap[1] = V::odds(a0, b0), tap[2] = V::evens(a1, b1), tap[3] = V::odds(a1, b1);
        } else if (n == L) {
          tap[0] = V::load(r0), tap[1] = V::load(r0 + 1), tap[2] = V::load(r1), tap[3] = V::load(r1 + 1);
        } else {
          tap[0] = V::load(r0, lo), tap[1] = V::load(r0 + 1, lo);
          tap[2] = V::load(r1, lo), tap[3] = V::load(r1 + 1, lo);
        }
        const Mask all = V::lanes(0, L);
        Val best = tap[0];
        typename V::Off arg = tap_offset[0];
        for (int k = 1; k < 4; ++k) {
          const Mask win = V::wins(all, tap[k], best);
          best = V::select(win, tap[k], best);
          arg = V::select_arg(win, tap_offset[k], arg);
        }
        const int64_t o = plane * out_plane + oh * out_w + ow0;
        V::store(y + o, idx + o, best, V::add(V::add(arg, windows), first), n);
      }
    }
  }
}

template <int kStride>
struct Stride {
  static constexpr int value = kStride;
};

// loop(Stride<1>{}) or loop(Stride<2>{}): the loops are compiled per horizontal stride, the two
// that fits_rows_loop admits (the dispatcher checks it, and is_pool_2x2 implies it). Any other
// stride is a caller's bug, reported rather than leaving the output unwritten.
template <typename Loop>
void by_stride(int64_t stride_w, const Loop& loop) {
  if (stride_w == 1) {
    loop(Stride<1>{});
  } else if (stride_w == 2) {
    loop(Stride<2>{});
  } else {
    throw std::logic_error("cnnext max_pool2d: the AVX-512 rows loop runs horizontal strides 1 and 2 only");
  }
}

}  // namespace

void max_pool2d_2x2_avx512(const Pool2dParams& p, const float* x, int64_t planes, float* y, int64_t* idx) {
  by_stride(p.stride_w, [&](auto s) { max_pool2d_2x2<F32x16, decltype(s)::value>(p, x, planes, y, idx); });
}

void max_pool2d_2x2_avx512(const Pool2dParams& p, const double* x, int64_t planes, double* y, int64_t* idx) {
  by_stride(p.stride_w, [&](auto s) { max_pool2d_2x2<F64x8, decltype(s)::value>(p, x, planes, y, idx); });
}

void max_pool2d_rows_avx512(const Pool2dParams& p, const float* x, int64_t planes, float* y, int64_t* idx) {
  by_stride(p.stride_w, [&](auto s) { max_pool2d_rows<F32x16, decltype(s)::value>(p, x, planes, y, idx); });
}

void max_pool2d_rows_avx512(const Pool2dParams& p, const double* x, int64_t planes, double* y, int64_t* idx) {
  by_stride(p.stride_w, [&](auto s) { max_pool2d_rows<F64x8, decltype(s)::value>(p, x, planes, y, idx); });
}

void max_pool2d_flat_avx512(const FlatPoolTables& t, const float* x, int64_t planes, float* y, int64_t* idx) {
  max_pool2d_flat<F32x16>(t, x, planes, y, idx);
}

void max_pool2d_flat_avx512(const FlatPoolTables& t, const double* x, int64_t planes, double* y, int64_t* idx) {
  max_pool2d_flat<F64x8>(t, x, planes, y, idx);
}

}  // namespace cpu
}  // namespace cnnext

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // CNNEXT_X86_SIMD
