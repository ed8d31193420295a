// Which x86 vector extensions the explicitly dispatched CPU kernels may use.
//
// Two mechanisms pick CPU code per machine: most kernels are compiled as
// target_clones (kernel_utils.h) and the loader picks the clone, while
// kernels written with intrinsics (max pooling) are chosen here at run time.
// Only the latter can be narrowed on purpose, which the tests use to run the
// AVX2 and baseline paths on an AVX-512 machine. Torch-free on purpose.
#pragma once

namespace cnnext {
namespace cpu {

enum class Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The best ISA this CPU and OS support (AVX-512 means F+BW+DQ+VL).
Isa detected_isa();

// min(detected_isa(), the limit set below; none at first). cnnext's Python
// package sets it from the CNNEXT_CPU_ISA environment variable at import.
Isa active_isa();

// Sets the limit; returns the previous one.
Isa set_isa_limit(Isa limit);

const char* isa_name(Isa isa);

// Parses "avx512" / "avx2" / "baseline"; false when `name` is none of them.
bool parse_isa(const char* name, Isa& isa);

}  // namespace cpu
}  // namespace cnnext
