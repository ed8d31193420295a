// How many bytes of working set the CPU kernels plan for, in one place: each
// budget is what one thread's hot operands may take so that they stay in a
// core's L2 cache (1 - 2 MB on the x86 servers and desktops cnnext targets).
#pragma once

#include <cstdint>

namespace cnnext {
namespace cpu {

// Direct convolution: the staged input planes (and grad_weight's copied
// grad_output) that one thread's micro-kernels sweep over and over.
constexpr int64_t kDirectStagingBytes = 768 << 10;

// im2col: one chunk of the column matrix, written by im2col and read by the
// GEMM right after, while it is still in cache.
constexpr int64_t kColumnChunkBytes = 1 << 20;

// Flat max pooling: the offset tables every plane reads; past this they
// would push the planes themselves out of L2, and the rows loop wins.
constexpr int64_t kPoolTableBytes = 512 << 10;

}  // namespace cpu
}  // namespace cnnext
