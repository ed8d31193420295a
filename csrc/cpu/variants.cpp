#include "variants.h"

namespace cnnext {
namespace cpu {

template <typename T>
const DirectKernels<T>& direct_kernels(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::kAvx512) return direct_kernels_avx512(T());
  if (isa == Isa::kAvx2) return direct_kernels_avx2(T());
#endif
  return direct_kernels_portable(T());
}

template <typename T>
const PoolLoops<T>& pool_loops(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::kAvx512) return pool_loops_avx512(T());
  if (isa == Isa::kAvx2) return pool_loops_avx2(T());
#endif
  return pool_loops_portable(T());
}

template const DirectKernels<float>& direct_kernels<float>(Isa);
template const DirectKernels<double>& direct_kernels<double>(Isa);
template const PoolLoops<float>& pool_loops<float>(Isa);
template const PoolLoops<double>& pool_loops<double>(Isa);
template const PoolLoops<c10::Half>& pool_loops<c10::Half>(Isa);
template const PoolLoops<c10::BFloat16>& pool_loops<c10::BFloat16>(Isa);
template const PoolLoops<int8_t>& pool_loops<int8_t>(Isa);
template const PoolLoops<uint8_t>& pool_loops<uint8_t>(Isa);
template const PoolLoops<int16_t>& pool_loops<int16_t>(Isa);
template const PoolLoops<int32_t>& pool_loops<int32_t>(Isa);
template const PoolLoops<int64_t>& pool_loops<int64_t>(Isa);

}  // namespace cpu
}  // namespace cnnext
