// The AVX-512 (x86-64-v4) variant of the pooling loops (variants.h).
#include "isa_prelude.h"

#if defined(__x86_64__)  // built for x86-64 only: other architectures run the portable variant

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("arch=x86-64-v4"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
#endif

#include "pool_loops.h"

namespace cnnext {
namespace cpu {

const PoolLoops<float>& pool_loops_avx512(float) { return pool_loops_of<float, arch::Avx512>(); }
const PoolLoops<double>& pool_loops_avx512(double) { return pool_loops_of<double, arch::Avx512>(); }
const PoolLoops<c10::Half>& pool_loops_avx512(c10::Half) { return pool_loops_of<c10::Half, arch::Avx512>(); }
const PoolLoops<c10::BFloat16>& pool_loops_avx512(c10::BFloat16) { return pool_loops_of<c10::BFloat16, arch::Avx512>(); }
const PoolLoops<int8_t>& pool_loops_avx512(int8_t) { return pool_loops_of<int8_t, arch::Avx512>(); }
const PoolLoops<uint8_t>& pool_loops_avx512(uint8_t) { return pool_loops_of<uint8_t, arch::Avx512>(); }
const PoolLoops<int16_t>& pool_loops_avx512(int16_t) { return pool_loops_of<int16_t, arch::Avx512>(); }
const PoolLoops<int32_t>& pool_loops_avx512(int32_t) { return pool_loops_of<int32_t, arch::Avx512>(); }
const PoolLoops<int64_t>& pool_loops_avx512(int64_t) { return pool_loops_of<int64_t, arch::Avx512>(); }

}  // namespace cpu
}  // namespace cnnext

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // __x86_64__
