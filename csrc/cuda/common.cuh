// Device-side helpers shared by the .cu files of csrc/cuda (never included by
// host-only code). Torch-free, like launchers.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "launchers.h"

// Seams for tests/cuda_emulation, which compiles these files with a host
// compiler and runs the kernels on CPU threads. nvcc gets exactly the plain
// CUDA spellings; the emulation header defines its own versions first.
//
// CNNEXT_LAUNCH(grid, block, smem, stream, kernel)(args...) launches a kernel
// (kernel last, so that the commas of its template arguments need no parentheses).
#ifndef CNNEXT_LAUNCH
#define CNNEXT_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#endif
// Declares `name`, the block's dynamic shared memory, as 16-byte aligned bytes.
#ifndef CNNEXT_DYNAMIC_SHARED
#define CNNEXT_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif
// Flat element counts up to this use 32-bit index arithmetic (see fits_int32);
// the emulation tests lower it to reach the 64-bit paths with small tensors.
#ifndef CNNEXT_CUDA_INDEX32_LIMIT
#define CNNEXT_CUDA_INDEX32_LIMIT (int64_t(1) << 30)
#endif

namespace cnnext {
namespace cuda {
namespace detail {

using launch::acc_t;

// Conversions spelled out as intrinsics: torch builds .cu files with
// __CUDA_NO_HALF_CONVERSIONS__ / __CUDA_NO_BFLOAT16_CONVERSIONS__, which
// remove the implicit ones.
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
struct FromAcc;
template <>
struct FromAcc<float> {
  __device__ __forceinline__ static float apply(float v) { return v; }
};
template <>
struct FromAcc<double> {
  __device__ __forceinline__ static double apply(double v) { return v; }
};
template <>
struct FromAcc<__half> {
  __device__ __forceinline__ static __half apply(float v) { return __float2half_rn(v); }
};
template <>
struct FromAcc<__nv_bfloat16> {
  __device__ __forceinline__ static __nv_bfloat16 apply(float v) { return __float2bfloat16_rn(v); }
};

// Round an accumulator (float or double) to T.
template <typename T, typename A>
__device__ __forceinline__ T from_acc(A v) {
  return FromAcc<T>::apply(static_cast<acc_t<T>>(v));
}

// T -> U through the wider of their accumulate types, exact for every pair
// this project uses (16-bit -> float, X -> X).
template <typename U, typename T>
__device__ __forceinline__ U convert_to(T v) {
  return from_acc<U>(to_acc(v));
}

// Loads through the read-only cache; the kernels never write what they read
// through these pointers.
template <typename T>
__device__ __forceinline__ T ldg(const T* p) {
  return __ldg(p);
}
// __ldg has no overload for the 16-bit types under __CUDA_NO_HALF_*; read the
// raw bits instead.
template <>
__device__ __forceinline__ __half ldg<__half>(const __half* p) {
  return __ushort_as_half(__ldg(reinterpret_cast<const unsigned short*>(p)));
}
template <>
__device__ __forceinline__ __nv_bfloat16 ldg<__nv_bfloat16>(const __nv_bfloat16* p) {
  return __ushort_as_bfloat16(__ldg(reinterpret_cast<const unsigned short*>(p)));
}

// Division rounding towards minus infinity (C++ '/' truncates towards zero),
// for tile origins that can lie in the padding.
__host__ __device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q;
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// std::min is not a device function without --expt-relaxed-constexpr.
__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Sum of `v` over the block, valid in thread 0. The tree has a fixed shape
// for a given blockDim, so the result does not depend on scheduling:
// reductions built on it are bitwise reproducible. `scratch` holds one slot
// per warp (32 suffice for any block); blockDim.x must be a multiple of 32.
template <typename A>
__device__ __forceinline__ A block_reduce_sum(A v, A* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = lane < warps ? scratch[lane] : A(0);
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Grid size for a grid-stride loop over `n` items: enough blocks to fill the
// device several times over, never more than the x-dimension limit.
inline unsigned int grid_for(int64_t n, int threads) {
  const int64_t blocks = ceil_div(n, threads);
  const int64_t cap = int64_t(1) << 20;  // the loops stride over the rest
  return static_cast<unsigned int>(blocks < cap ? blocks : cap);
}

// Whether 32-bit index arithmetic is exact for `n` flat elements (int32
// division is several times cheaper than int64 on the GPU). The headroom
// keeps `i += stride` of a grid-stride loop (stride <= 2^28) from
// overflowing.
inline bool fits_int32(int64_t n) { return n >= 0 && n <= CNNEXT_CUDA_INDEX32_LIMIT; }

inline int multiprocessor_count() {
  int device = 0;
  int count = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0) {
    cudaGetLastError();  // do not leave a stale error for the launch checks
    return 80;
  }
  return count;
}

inline bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

}  // namespace detail
}  // namespace cuda
}  // namespace cnnext
