// Vector helpers of the per-ISA kernels, written with GCC/Clang vector
// extensions over a vector width `Bytes` (64 for AVX-512, 32 for AVX2, 16
// for SSE2 and NEON), so one source serves every ISA and the accumulators
// provably live in registers.
//
// Include this only after a per-ISA translation unit switched the compiler
// to its ISA (see conv2d_direct/conv2d_direct_avx2.cpp): everything here has
// internal linkage, so each ISA's copy stays in its own translation unit and
// none can serve the callers of another (the linker keeps one copy of an
// inline function with external linkage, whichever ISA it was compiled for).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

namespace cnnext {
namespace cpu {
namespace {

template <typename T, int64_t Bytes>
struct VecOf {
  typedef T type __attribute__((vector_size(Bytes)));
};
// One vector register of T.
template <typename T, int64_t Bytes>
using Vec = typename VecOf<T, Bytes>::type;

// Lanes of T in a vector of `Bytes` bytes.
template <typename T, int64_t Bytes>
constexpr int64_t kLanes = Bytes / static_cast<int64_t>(sizeof(T));

template <int64_t Bytes, typename T>
inline Vec<T, Bytes> load_vec(const T* p) {
  Vec<T, Bytes> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T, int64_t Bytes>
inline void store_vec(T* p, const Vec<T, Bytes>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// Before a loop over a kernel step's accumulators, or over the vectors and
// pixels that index them, whose count is a constant. GCC keeps an array of
// accumulators in registers only when every loop that indexes it was unrolled
// before its scalar replacement pass runs; left to its own heuristics it kept
// the array on the stack and moved it into registers around the reduction
// loop, a store and a load per accumulator on every step, which steps over
// short reductions (1 x 1 kernels, a few taps between borders) waited on.
#if defined(__clang__)
#define CNNEXT_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define CNNEXT_UNROLL _Pragma("GCC unroll 64")
#else
#define CNNEXT_UNROLL
#endif

// Pins v to a vector register without an instruction. Left to itself, GCC
// folds a loaded vector into every FMA that uses it (a load per FMA instead
// of one), and loads, not FMAs, then bound the loop.
template <typename T, int64_t Bytes>
inline void keep_in_register(Vec<T, Bytes>& v) {
#if defined(__x86_64__) || defined(__i386__)
  asm("" : "+v"(v));
#elif defined(__aarch64__)
  asm("" : "+w"(v));
#endif
}

// Integer vectors as wide as Vec<T, Bytes>, for lane masks.
template <typename T>
struct BitsElement;
template <>
struct BitsElement<float> {
  using type = int32_t;
};
template <>
struct BitsElement<double> {
  using type = int64_t;
};
template <typename T, int64_t Bytes>
using Bits = Vec<typename BitsElement<T>::type, Bytes>;

// All bits set in lanes [lo, hi), clear in the others.
template <typename T, int64_t Bytes>
inline Bits<T, Bytes> lane_mask(int64_t lo, int64_t hi) {
  Bits<T, Bytes> lane, lo_v, hi_v;
  for (int64_t i = 0; i < kLanes<T, Bytes>; ++i) {
    lane[i] = i;
    lo_v[i] = lo;
    hi_v[i] = hi;
  }
  return (lane >= lo_v) & (lane < hi_v);
}

// v with the lanes outside `keep` set to +0 (bitwise, so it also clears inf and NaN).
template <typename T, int64_t Bytes>
inline Vec<T, Bytes> keep_lanes(const Vec<T, Bytes>& v, const Bits<T, Bytes>& keep) {
  return reinterpret_cast<Vec<T, Bytes>>(reinterpret_cast<Bits<T, Bytes>>(v) & keep);
}

// p[0], p[stride], ..., p[(lanes - 1) * stride].
template <int64_t Bytes, typename T>
inline Vec<T, Bytes> load_strided(const T* p, int64_t stride) {
  Vec<T, Bytes> v;
  for (int64_t i = 0; i < kLanes<T, Bytes>; ++i) v[i] = p[i * stride];
  return v;
}

// dst[i] = op(src[i]) for i < width, in vectors of `Bytes` bytes only: a row
// that does not fill its last vector ends with one that overlaps the one
// before (rewriting the same values), because a scalar tail of up to 15
// elements costs more than the vectors of a 13 - 28-element row. Returns
// false, touching nothing, when the row is narrower than one such vector.
// src and dst must not overlap.
template <int64_t Bytes, typename T, typename Op>
inline bool transform_row_in(const T* src, int64_t width, T* dst, Op op) {
  constexpr int64_t n = kLanes<T, Bytes>;
  if (width < n) return false;
  auto step = [&](int64_t i) {
    Vec<T, Bytes> v = load_vec<Bytes>(src + i);
    store_vec<T, Bytes>(dst + i, op(v));
  };
  int64_t i = 0;
  for (; i + n <= width; i += n) step(i);
  if (i < width) step(width - n);
  return true;
}

// dst[i] = op(src[i]) for i < width with the widest vectors (up to `Bytes`)
// the row fills; `op` is a generic lambda: it maps a vector of any width, or
// a scalar for rows narrower than 16 bytes, to the same type.
template <int64_t Bytes, typename T, typename Op>
inline void transform_row(const T* src, int64_t width, T* dst, Op op) {
  if constexpr (Bytes > 16) {
    if (transform_row_in<Bytes>(src, width, dst, op)) return;
    return transform_row<Bytes / 2>(src, width, dst, op);
  } else {
    if (transform_row_in<16>(src, width, dst, op)) return;
    for (int64_t i = 0; i < width; ++i) dst[i] = op(src[i]);
  }
}

// Calls f(std::integral_constant<int64_t, k>) with k = min(n, kMax), at least 1: for kernels
// compiled for each number of vectors up to their tile's.
template <int64_t kMax, typename F>
inline void with_vector_count(int64_t n, F&& f) {
  if constexpr (kMax > 1) {
    if (n < kMax) return with_vector_count<kMax - 1>(n, f);
  }
  f(std::integral_constant<int64_t, kMax>());
}

// A vector of A from the lanes of x, converted element by element where T is not A.
template <int64_t Bytes, typename A, typename T>
inline Vec<A, Bytes> load_as(const T* x) {
  if constexpr (std::is_same_v<A, T>) {
    return load_vec<Bytes>(x);
  } else {
    Vec<A, Bytes> v;
    for (int64_t l = 0; l < kLanes<A, Bytes>; ++l) v[l] = static_cast<A>(x[l]);
    return v;
  }
}

// The sum of x[0:n] in A (x converted element by element), in four
// independent vector chains: one chain is bound by the add latency, not by
// the loads.
template <int64_t Bytes, typename A, typename T>
inline A vector_sum(const T* x, int64_t n) {
  constexpr int64_t V = kLanes<A, Bytes>;
  if (n < V) {  // tiny planes (3 x 3): a vector's horizontal sum would cost more than the plane
    A sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<A>(x[i]);
    return sum;
  }
  Vec<A, Bytes> acc[4] = {};
  int64_t i = 0;
  for (; i + 4 * V <= n; i += 4 * V)
    for (int64_t u = 0; u < 4; ++u) acc[u] += load_as<Bytes, A>(x + i + u * V);
  for (; i + V <= n; i += V) acc[0] += load_as<Bytes, A>(x + i);
  const Vec<A, Bytes> all = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  A sum = 0;
  for (int64_t l = 0; l < V; ++l) sum += all[l];
  for (; i < n; ++i) sum += static_cast<A>(x[i]);
  return sum;
}

// Whether x[0:n] holds no infinity or NaN: x * 0 is 0 for finite x and NaN
// otherwise, so the sum of x * 0 tells, without a branch per element.
template <int64_t Bytes, typename T>
inline bool all_finite_range(const T* x, int64_t n) {
  constexpr int64_t V = kLanes<T, Bytes>;
  Vec<T, Bytes> acc[4] = {};
  int64_t i = 0;
  for (; i + 4 * V <= n; i += 4 * V)
    for (int64_t u = 0; u < 4; ++u) acc[u] += load_vec<Bytes>(x + i + u * V) * T(0);
  T sum = 0;
  for (; i < n; ++i) sum += x[i] * T(0);
  const Vec<T, Bytes> all = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (int64_t v = 0; v < V; ++v) sum += all[v];
  return sum == T(0);
}

// The sum of v's lanes: its two halves added, then theirs, down to one lane (log2(lanes) adds
// instead of lanes - 1 scalar ones).
template <typename T, int64_t Bytes>
inline T lane_sum(const Vec<T, Bytes>& v) {
  if constexpr (Bytes == static_cast<int64_t>(sizeof(T))) {
    return v[0];
  } else {
    Vec<T, Bytes / 2> lo, hi;
    std::memcpy(&lo, &v, sizeof(lo));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
    return lane_sum<T, Bytes / 2>(lo + hi);
  }
}

// dst[0:n] = the first n lanes of v (n < lanes), in at most log2(lanes)
// fixed-size copies: a copy of variable size would be a library call.
template <typename T, int64_t Bytes, int64_t kPart = kLanes<T, Bytes> / 2>
inline void store_first(T* dst, const Vec<T, Bytes>& v, int64_t n, int64_t at = 0) {
  if (n & kPart) {
    std::memcpy(dst + at, reinterpret_cast<const char*>(&v) + at * sizeof(T), kPart * sizeof(T));
    at += kPart;
  }
  if constexpr (kPart > 1) store_first<T, Bytes, kPart / 2>(dst, v, n, at);
}

// dst[0:n] = src[0:n] for n < 2 * kPart, in fixed-size copies of kPart, kPart / 2, ... elements.
template <typename T, int64_t kPart>
inline void copy_pieces(const T* src, int64_t n, T* dst) {
  if (n & kPart) {
    std::memcpy(dst, src, kPart * sizeof(T));
    src += kPart, dst += kPart;
  }
  if constexpr (kPart > 1) copy_pieces<T, kPart / 2>(src, n, dst);
}

// dst[0:n] = src[0:n] without a library call: whole vectors, then the rest in fixed-size pieces
// (short rows, where a call to memcpy costs more than the copy). src and dst must not overlap.
template <typename T, int64_t Bytes>
inline void copy_short(const T* src, int64_t n, T* dst) {
  constexpr int64_t V = kLanes<T, Bytes>;
  int64_t i = 0;
  for (; i + V <= n; i += V) store_vec<T, Bytes>(dst + i, load_vec<Bytes>(src + i));
  if constexpr (V > 1) copy_pieces<T, V / 2>(src + i, n - i, dst + i);
}

// Swaps the off-diagonal blocks of s lanes of rows a and b: lane l of a becomes
// (l & s) ? b[l - s] : a[l], lane l of b becomes (l & s) ? b[l] : a[l + s].
template <int64_t s, typename T, int64_t Bytes, size_t... L>
inline void swap_lane_blocks(Vec<T, Bytes>& a, Vec<T, Bytes>& b, std::index_sequence<L...>) {
  constexpr int64_t V = kLanes<T, Bytes>;
  // Lane indices into the concatenation of a and b.
#if defined(__clang__) || __GNUC__ >= 12
  const Vec<T, Bytes> new_a = __builtin_shufflevector(a, b, ((L & s) ? V + int64_t(L) - s : int64_t(L))...);
  b = __builtin_shufflevector(a, b, ((L & s) ? V + int64_t(L) : int64_t(L) + s)...);
#else  // GCC before 12 has only its own form, with a vector of indices
  constexpr Bits<T, Bytes> to_a{((L & s) ? V + int64_t(L) - s : int64_t(L))...};
  constexpr Bits<T, Bytes> to_b{((L & s) ? V + int64_t(L) : int64_t(L) + s)...};
  const Vec<T, Bytes> new_a = __builtin_shuffle(a, b, to_a);
  b = __builtin_shuffle(a, b, to_b);
#endif
  a = new_a;
}

// The lanes of the 2 x V elements a then b taken every second one: even = a[0], a[2], ..., b[V - 2],
// odd = a[1], a[3], ..., b[V - 1] (a row split into its two stride-2 phases).
template <typename T, int64_t Bytes, size_t... L>
inline void deinterleave_pairs(const Vec<T, Bytes>& a, const Vec<T, Bytes>& b, Vec<T, Bytes>& even,
                               Vec<T, Bytes>& odd, std::index_sequence<L...>) {
#if defined(__clang__) || __GNUC__ >= 12
  even = __builtin_shufflevector(a, b, (2 * int64_t(L))...);
  odd = __builtin_shufflevector(a, b, (2 * int64_t(L) + 1)...);
#else
  constexpr Bits<T, Bytes> to_even{(2 * int64_t(L))...};
  constexpr Bits<T, Bytes> to_odd{(2 * int64_t(L) + 1)...};
  even = __builtin_shuffle(a, b, to_even);
  odd = __builtin_shuffle(a, b, to_odd);
#endif
}

// The inverse of deinterleave_pairs: lo = a[0], b[0], a[1], b[1], ..., a[V/2 - 1], b[V/2 - 1], hi the
// same from a[V/2] and b[V/2] (a row spread out with stride 2 from a, the gaps filled from b).
template <typename T, int64_t Bytes, size_t... L>
inline void interleave_pairs(const Vec<T, Bytes>& a, const Vec<T, Bytes>& b, Vec<T, Bytes>& lo, Vec<T, Bytes>& hi,
                             std::index_sequence<L...>) {
  constexpr int64_t V = kLanes<T, Bytes>;
#if defined(__clang__) || __GNUC__ >= 12
  lo = __builtin_shufflevector(a, b, ((L & 1) ? V + int64_t(L) / 2 : int64_t(L) / 2)...);
  hi = __builtin_shufflevector(a, b, ((L & 1) ? V + V / 2 + int64_t(L) / 2 : V / 2 + int64_t(L) / 2)...);
#else
  constexpr Bits<T, Bytes> to_lo{((L & 1) ? V + int64_t(L) / 2 : int64_t(L) / 2)...};
  constexpr Bits<T, Bytes> to_hi{((L & 1) ? V + V / 2 + int64_t(L) / 2 : V / 2 + int64_t(L) / 2)...};
  lo = __builtin_shuffle(a, b, to_lo);
  hi = __builtin_shuffle(a, b, to_hi);
#endif
}

// rows[0..V) transposed in place (V = lanes): after it, lane l of rows[k] is
// what lane k of rows[l] was. log2(V) rounds of two-register shuffles, each
// swapping the off-diagonal blocks of half the size of the round before.
template <typename T, int64_t Bytes, int64_t s = kLanes<T, Bytes> / 2>
inline void transpose_square(Vec<T, Bytes>* rows) {
  for (int64_t i = 0; i < kLanes<T, Bytes>; ++i)
    if (!(i & s)) swap_lane_blocks<s, T, Bytes>(rows[i], rows[i + s], std::make_index_sequence<kLanes<T, Bytes>>());
  if constexpr (s > 1) transpose_square<T, Bytes, s / 2>(rows);
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
