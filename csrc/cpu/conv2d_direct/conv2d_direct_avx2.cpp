// The AVX2+FMA (x86-64-v3) variant of the direct convolution kernels (variants.h).
#include "../isa_prelude.h"

#if defined(__x86_64__)  // built for x86-64 only: other architectures run the portable variant

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("arch=x86-64-v3"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#endif

#include "driver.h"

namespace cnnext {
namespace cpu {

const DirectKernels<float>& direct_kernels_avx2(float) { return direct_kernels_of<float, arch::Avx2>(); }
const DirectKernels<double>& direct_kernels_avx2(double) { return direct_kernels_of<double, arch::Avx2>(); }

}  // namespace cpu
}  // namespace cnnext

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // __x86_64__
