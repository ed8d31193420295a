// The AVX-512 (x86-64-v4) variant of the direct convolution kernels (variants.h).
#include "../isa_prelude.h"

#if defined(__x86_64__)  // built for x86-64 only: other architectures run the portable variant

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("arch=x86-64-v4"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
#endif

#include "driver.h"

namespace cnnext {
namespace cpu {

const DirectKernels<float>& direct_kernels_avx512(float) { return direct_kernels_of<float, arch::Avx512>(); }
const DirectKernels<double>& direct_kernels_avx512(double) { return direct_kernels_of<double, arch::Avx512>(); }

}  // namespace cpu
}  // namespace cnnext

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // __x86_64__
