// AVX2 build of the flat max-pool loop (max_pool2d_simd.h), for CPUs
// without AVX-512. Same rule as max_pool2d_avx512.cpp: nothing defined after
// the target pragma may be an inline function other files also use.
#include "max_pool2d_simd.h"

#ifdef CNNEXT_X86_SIMD

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

#include <immintrin.h>

#include "max_pool2d_flat_loop.h"

namespace cnnext {
namespace cpu {
namespace {

// AVX2 has no mask registers: masks are vectors whose lanes are all ones.

// 8 float outputs per step.
struct F32x8 {
  using T = float;
  using Val = __m256;
  using Off = __m256i;
  using Arg = __m256i;
  using Mask = __m256;
  static constexpr int64_t kLanes = 8;

  static Off load_offsets(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static Arg to_arg(Off off) { return off; }
  static Mask inside(Off off) { return _mm256_castsi256_ps(_mm256_cmpgt_epi32(off, _mm256_set1_epi32(-1))); }
  static Val lowest() { return _mm256_set1_ps(-__builtin_inff()); }
  static Val gather(Mask m, Off off, const float* base) { return _mm256_mask_i32gather_ps(lowest(), base, off, m, 4); }
  // PyTorch's rule: a value replaces the best so far if it is larger or NaN.
  static Mask wins(Mask m, Val v, Val best) {
    return _mm256_and_ps(m, _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  }
  static Val select(Mask m, Val a, Val b) { return _mm256_blendv_ps(b, a, m); }
  static Arg select_arg(Mask m, Arg a, Arg b) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(a), m));
  }
  static void store(float* y, int64_t* idx, Val v, Arg arg, int64_t n) {
    if (n == kLanes) {
      _mm256_storeu_ps(y, v);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(arg)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(arg, 1)));
      return;
    }
    alignas(32) float vals[kLanes];
    alignas(32) int32_t args[kLanes];
    _mm256_store_ps(vals, v);
    _mm256_store_si256(reinterpret_cast<__m256i*>(args), arg);
    for (int64_t i = 0; i < n; ++i) {
      y[i] = vals[i];
      idx[i] = args[i];
    }
  }
};

// 4 double outputs per step; the winning offsets are kept as int64 lanes,
// the width of the double masks.
struct F64x4 {
  using T = double;
  using Val = __m256d;
  using Off = __m128i;
  using Arg = __m256i;
  using Mask = __m256d;
  static constexpr int64_t kLanes = 4;

  static Off load_offsets(const int32_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  static Arg to_arg(Off off) { return _mm256_cvtepi32_epi64(off); }
  static Mask inside(Off off) {
    return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_cmpgt_epi32(off, _mm_set1_epi32(-1))));
  }
  static Val lowest() { return _mm256_set1_pd(-__builtin_inf()); }
  static Val gather(Mask m, Off off, const double* base) { return _mm256_mask_i32gather_pd(lowest(), base, off, m, 8); }
  static Mask wins(Mask m, Val v, Val best) {
    return _mm256_and_pd(m, _mm256_or_pd(_mm256_cmp_pd(v, best, _CMP_GT_OQ), _mm256_cmp_pd(v, v, _CMP_UNORD_Q)));
  }
  static Val select(Mask m, Val a, Val b) { return _mm256_blendv_pd(b, a, m); }
  static Arg select_arg(Mask m, Arg a, Arg b) {
    return _mm256_castpd_si256(_mm256_blendv_pd(_mm256_castsi256_pd(b), _mm256_castsi256_pd(a), m));
  }
  static void store(double* y, int64_t* idx, Val v, Arg arg, int64_t n) {
    if (n == kLanes) {
      _mm256_storeu_pd(y, v);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx), arg);
      return;
    }
    alignas(32) double vals[kLanes];
    alignas(32) int64_t args[kLanes];
    _mm256_store_pd(vals, v);
    _mm256_store_si256(reinterpret_cast<__m256i*>(args), arg);
    for (int64_t i = 0; i < n; ++i) {
      y[i] = vals[i];
      idx[i] = args[i];
    }
  }
};

}  // namespace

void max_pool2d_flat_avx2(const FlatPoolTables& t, const float* x, int64_t planes, float* y, int64_t* idx) {
  max_pool2d_flat<F32x8>(t, x, planes, y, idx);
}

void max_pool2d_flat_avx2(const FlatPoolTables& t, const double* x, int64_t planes, double* y, int64_t* idx) {
  max_pool2d_flat<F64x4>(t, x, planes, y, idx);
}

}  // namespace cpu
}  // namespace cnnext

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // CNNEXT_X86_SIMD
