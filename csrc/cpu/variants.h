// The table of per-ISA kernel variants (as XNNPACK keeps one table of its
// microkernel variants): the loops compiled once per instruction set, in
// per-ISA translation units (conv2d_direct/conv2d_direct_<isa>.cpp,
// pool_loops_<isa>.cpp), and the lookup by isa.h's Isa that picks one at run
// time, so cnnext.set_cpu_isa() narrows every CPU kernel. On other
// architectures than x86-64 only the portable variant is built.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "../params.h"
#include "isa.h"

namespace cnnext {
namespace cpu {

struct ConvPlan;

// The direct convolution (conv2d_direct/driver.h) for float or double. The
// activations and, for forward and grad_input, the weights are channels_last
// where plan.channels_last says, NCHW otherwise; grad_weight is NCHW.
template <typename T>
struct DirectKernels {
  void (*forward)(const Conv2dParams& p, const ConvPlan& plan, const T* input, const T* weight, const T* bias,
                  T* output);
  void (*grad_input)(const Conv2dParams& p, const ConvPlan& plan, const T* grad_output, const T* weight,
                     T* grad_input);
  // Also grad_bias[c] = sum of grad_output[n][c] when grad_bias is not null,
  // summed while grad_weight's pass has the planes in cache.
  void (*grad_weight)(const Conv2dParams& p, const ConvPlan& plan, const T* grad_output, const T* input,
                      T* grad_weight, T* grad_bias);
  // The sum of x[0:n].
  T (*plane_sum)(const T* x, int64_t n);
};

// The pooling loops (pool_loops.h) for float, double, float16, bfloat16 and
// the integer types PyTorch's CPU pooling takes (max: int8 - int64; average:
// int64); each runs `planes` consecutive planes.
template <typename T>
struct PoolLoops {
  void (*avg_forward)(const AvgPool2dParams& p, const T* x, int64_t planes, T* y);
  void (*avg_backward)(const AvgPool2dParams& p, const T* gy, int64_t planes, T* gx);
  // Max pooling one output row at a time (any geometry, any type); the flat
  // and rows loops of max_pool2d_simd.h are the faster x86 ones.
  void (*max_forward)(const Pool2dParams& p, const T* x, int64_t planes, T* y, int64_t* idx);
  // Max pooling of channels_last output rows [row_begin, row_end) of (n, oh), `channels` per pixel.
  void (*max_forward_nhwc)(const Pool2dParams& p, int64_t channels, const T* x, int64_t row_begin, int64_t row_end,
                           T* y, int64_t* idx);
};

// The variant for `isa` (the portable one where that ISA is not built).
template <typename T>
const DirectKernels<T>& direct_kernels(Isa isa);
template <typename T>
const PoolLoops<T>& pool_loops(Isa isa);

// Each per-ISA translation unit defines its overloads of these (the argument
// only picks the element type).
#define CNNEXT_DECLARE_VARIANTS(isa)                                                  \
  const DirectKernels<float>& direct_kernels_##isa(float);                            \
  const DirectKernels<double>& direct_kernels_##isa(double);                          \
  const PoolLoops<float>& pool_loops_##isa(float);                                    \
  const PoolLoops<double>& pool_loops_##isa(double);                                  \
  const PoolLoops<c10::Half>& pool_loops_##isa(c10::Half);                            \
  const PoolLoops<c10::BFloat16>& pool_loops_##isa(c10::BFloat16);                    \
  const PoolLoops<int8_t>& pool_loops_##isa(int8_t);                                  \
  const PoolLoops<uint8_t>& pool_loops_##isa(uint8_t);                                \
  const PoolLoops<int16_t>& pool_loops_##isa(int16_t);                                \
  const PoolLoops<int32_t>& pool_loops_##isa(int32_t);                                \
  const PoolLoops<int64_t>& pool_loops_##isa(int64_t);
CNNEXT_DECLARE_VARIANTS(portable)
#if defined(__x86_64__)
CNNEXT_DECLARE_VARIANTS(avx2)
CNNEXT_DECLARE_VARIANTS(avx512)
#endif
#undef CNNEXT_DECLARE_VARIANTS

}  // namespace cpu
}  // namespace cnnext
