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

// Direct convolution, grad_weight over input vectors: the most a thread
// stages of one sample's input, pixel-major (its scratch; bands of it are
// what stays in cache).
constexpr int64_t kPixelStagingBytes = 2 << 20;

// Direct convolution, grad_weight over input vectors: the band of staged rows
// and grad_output that every tile of taps and channels sweeps in turn.
constexpr int64_t kPixelBandBytes = 256 << 10;

// Direct convolution, channel vectors: the packed weights of one part of a
// block's reduction, which every staged sample's pixels sweep.
constexpr int64_t kChannelVectorWeightBytes = 512 << 10;

// Direct convolution, grad_weight's channel vectors: the tap-major sums of a
// group's weight gradient that each chunk of the batch adds into as a whole
// while they stay in L2; larger ones are cut into slices of half this, one per
// task, summed over sets of samples staged for every task (driver.h).
constexpr int64_t kWeightSumsBytes = 1 << 20;

// Direct convolution, grad_weight's channel vectors for weight gradients
// above kWeightSumsBytes: the set of staged samples that every task reads.
// Not an L2 budget: each task reads bands of it, the set lies in the outer
// caches.
constexpr int64_t kSharedStagingBytes = 4 << 20;

// Direct convolution, grad_input's scattered channel vectors: the scratch
// tile of a padded input plane for a block of input channels, into which every
// gradient pixel adds its taps; within L2 (a 64-channel block of ResNet-18's
// 57 x 57 stride-2 input, 0.8 MB, ran faster than im2col).
constexpr int64_t kScatterTileBytes = 1 << 20;

// Direct convolution, channels_last depthwise grad_weight: the band of
// grad_output and input rows that every block of channels sweeps in turn.
constexpr int64_t kDepthwiseBandBytes = 256 << 10;

// Direct convolution, planes of first layers (planes_first_layer.h): the
// shifted copies of one band of rows, which every block of output channels
// sweeps.
constexpr int64_t kShiftedBandBytes = 256 << 10;

// im2col: the column matrix one task builds for a block of samples. Not an L2
// budget: the GEMM reads it in cache-sized panels of its own; this bounds the
// scratch per thread while leaving room for GEMMs wide enough to run at speed
// (a 512-channel 3 x 3 layer has 4608 column rows).
constexpr int64_t kColumnBlockBytes = 8 << 20;

// im2col for grad_weight: the columns one GEMM reduces over, built just before it. Kept to an
// L2's share so that the GEMM reads them from there: a sample's whole columns (7 MB for a
// 64-channel 3 x 3 layer on 56 x 56) went out to memory and back.
constexpr int64_t kColumnBandBytes = 1 << 20;

// Flat max pooling: the offset tables every plane reads; past this they
// would push the planes themselves out of L2, and the rows loop wins.
constexpr int64_t kPoolTableBytes = 512 << 10;

}  // namespace cpu
}  // namespace cnnext
