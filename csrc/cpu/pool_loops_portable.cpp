// The portable variant of the pooling loops (variants.h): the build's own
// ISA (x86-64 baseline: SSE2; aarch64: NEON).
#include "isa_prelude.h"

#include "pool_loops.h"

namespace cnnext {
namespace cpu {

const PoolLoops<float>& pool_loops_portable(float) { return pool_loops_of<float, arch::Portable>(); }
const PoolLoops<double>& pool_loops_portable(double) { return pool_loops_of<double, arch::Portable>(); }
const PoolLoops<c10::Half>& pool_loops_portable(c10::Half) { return pool_loops_of<c10::Half, arch::Portable>(); }
const PoolLoops<c10::BFloat16>& pool_loops_portable(c10::BFloat16) {
  return pool_loops_of<c10::BFloat16, arch::Portable>();
}
const PoolLoops<int8_t>& pool_loops_portable(int8_t) { return pool_loops_of<int8_t, arch::Portable>(); }
const PoolLoops<uint8_t>& pool_loops_portable(uint8_t) { return pool_loops_of<uint8_t, arch::Portable>(); }
const PoolLoops<int16_t>& pool_loops_portable(int16_t) { return pool_loops_of<int16_t, arch::Portable>(); }
const PoolLoops<int32_t>& pool_loops_portable(int32_t) { return pool_loops_of<int32_t, arch::Portable>(); }
const PoolLoops<int64_t>& pool_loops_portable(int64_t) { return pool_loops_of<int64_t, arch::Portable>(); }

}  // namespace cpu
}  // namespace cnnext
