/* The CPU's float32 FMA peak: GFLOP/s of a register-only FMA loop, per thread count.
 *
 *   gcc -O2 -pthread tools/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak [max threads, default 2]
 *   (FMA_PEAK_AVX2=1: AVX2 even where the CPU has AVX-512)
 *
 * A convolution cannot run faster than this; benchmarks/RESULTS.md bounds steps with it. Each
 * thread runs 12 independent FMA chains (more than an FMA's latency times the FMA units, so
 * the units, not the chains, limit), with the widest vectors the CPU has (AVX-512, else AVX2),
 * picked at run time. Pin nothing: the benchmarks run unpinned too.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { kChains = 12 };
static const long kSteps = 100000000L;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("avx512f"))) static float chains_avx512(void) {
  __m512 acc[kChains];
  const __m512 a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps((float)i);
  for (long n = 0; n < kSteps; ++n) {
#pragma GCC unroll 12  /* whole, so acc[] lives in registers */
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  float sum = 0;  /* used, so the loop is kept */
  for (int i = 0; i < kChains; ++i) sum += _mm512_reduce_add_ps(acc[i]);
  return sum;
}

__attribute__((target("avx2,fma"))) static float chains_avx2(void) {
  __m256 acc[kChains];
  const __m256 a = _mm256_set1_ps(1.0000001f), b = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps((float)i);
  for (long n = 0; n < kSteps; ++n) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  float sum = 0, lanes[8];
  for (int i = 0; i < kChains; ++i) {
    _mm256_storeu_ps(lanes, acc[i]);
    for (int v = 0; v < 8; ++v) sum += lanes[v];
  }
  return sum;
}

static int wide;  /* 1: AVX-512 */
static float results[64];

static void* run(void* slot) {
  *(float*)slot = wide ? chains_avx512() : chains_avx2();
  return NULL;
}

int main(int argc, char** argv) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    fprintf(stderr, "fma_peak: this CPU has no AVX2 with FMA\n");
    return 1;
  }
  wide = __builtin_cpu_supports("avx512f") && getenv("FMA_PEAK_AVX2") == NULL;
  const int max_threads = argc > 1 ? atoi(argv[1]) : 2;
  if (max_threads < 1 || max_threads > 64) {
    fprintf(stderr, "fma_peak: threads must be 1 to 64, got %s\n", argv[1]);
    return 1;
  }
  const double flops_per_step = kChains * 2.0 * (wide ? 16 : 8);
  for (int threads = 1; threads <= max_threads; ++threads) {
    pthread_t ids[64];
    const double start = now();
    for (int t = 0; t < threads; ++t) pthread_create(&ids[t], NULL, run, &results[t]);
    for (int t = 0; t < threads; ++t) pthread_join(ids[t], NULL);
    const double gflops = threads * kSteps * flops_per_step / (now() - start) / 1e9;
    printf("%s, %d thread%s: %.1f GFLOP/s (%.1f per thread)\n", wide ? "AVX-512" : "AVX2", threads,
           threads > 1 ? "s" : "", gflops, gflops / threads);
  }
  return 0;
}
