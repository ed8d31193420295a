// Which x86 vector extensions the CPU kernels may use. Every CPU kernel is
// compiled once per ISA (variants.h; max pooling's intrinsics in their own
// files) and the one active_isa() names runs, so narrowing the limit runs
// the AVX2 and baseline code on an AVX-512 machine (the tests do).
// Torch-free on purpose.
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

// Who made the CPU, where that decides which kernel is faster: torch's x86 BLAS
// (oneMKL) runs its fastest GEMM kernels on Intel's CPUs only, so im2col + GEMM
// loses to the direct kernels on more layers of the others (conv2d_plan.cpp).
enum class CpuVendor : int { kIntel = 0, kAmd = 1, kOther = 2 };

// This CPU's vendor (kOther off x86).
CpuVendor detected_vendor();

const char* vendor_name(CpuVendor vendor);

// Parses "intel" / "amd" / "other"; false when `name` is none of them.
bool parse_vendor(const char* name, CpuVendor& vendor);

}  // namespace cpu
}  // namespace cnnext
