// The portable variant of the direct convolution kernels (variants.h): the
// build's own ISA (x86-64 baseline: SSE2; aarch64: NEON), 16-byte vectors.
// No target pragma, and none of its headers may use x86 intrinsics.
#include "../isa_prelude.h"

#include "driver.h"

namespace cnnext {
namespace cpu {

const DirectKernels<float>& direct_kernels_portable(float) { return direct_kernels_of<float, arch::Portable>(); }
const DirectKernels<double>& direct_kernels_portable(double) { return direct_kernels_of<double, arch::Portable>(); }

}  // namespace cpu
}  // namespace cnnext
