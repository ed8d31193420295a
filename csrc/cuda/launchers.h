// Launchers of the CUDA kernels: the only interface between the thin torch
// layer (conv2d_cuda.cpp, max_pool2d_cuda.cpp) and the kernels (*.cu).
//
// This header must stay free of torch includes: the .cu files that define
// these functions are compiled by plain nvcc, which cannot digest torch's CUDA
// headers on a machine with the CPU wheel (the CPU wheel ships no
// c10/cuda/impl/cuda_cmake_macros.h). Pointers are raw
// device pointers to contiguous NCHW data; shapes come from the params
// structs, already validated by csrc/conv2d.cpp and csrc/max_pool2d.cpp.
//
// Every launcher enqueues its work on `stream`, on the current device (the
// caller holds a device guard), and returns the first launch error it saw
// (cudaSuccess otherwise) so the caller can turn it into an exception; none
// of them synchronises. Zero-sized work launches nothing.
//
// T is one of float, double, __half, __nv_bfloat16 (the thin layer maps
// at::Half / at::BFloat16 onto the last two, which share their layout);
// the templates are explicitly instantiated for exactly those types in the
// .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "../params.h"

namespace cnnext {
namespace cuda {
namespace launch {

// Type in which a kernel accumulates sums of T: float for the 16-bit types
// (their 8- or 11-bit mantissa would lose small addends long before a
// convolution's reduction is done) and for float, double for double.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccType<T>::type;

// ---------------------------------------------------------------------------
// conv2d, direct algorithm (conv2d_direct_kernel.cu)
//
// The tiled kernels stage their operands in shared memory; for geometries
// whose tiles do not fit (very large kernels or dilations) each launcher
// falls back to a simple, untiled kernel of the same result. Setting the
// environment variable CNNEXT_CUDA_DIRECT_GENERIC=1 forces the fallback, so
// that tests can cover it.

// output = conv(input, weight) (+ bias[c] when bias != nullptr).
template <typename T>
cudaError_t conv2d_direct_forward(const Conv2dParams& p, const T* input, const T* weight, const T* bias,
                                  T* output, cudaStream_t stream);

// grad_input = transposed convolution of grad_output with weight. Writes every
// element of grad_input (it need not be initialised).
template <typename T>
cudaError_t conv2d_direct_grad_input(const Conv2dParams& p, const T* grad_output, const T* weight, T* grad_input,
                                     cudaStream_t stream);

// How conv2d_direct_grad_weight splits its reduction over N x OH x OW. The
// caller asks for the plan, allocates `workspace_elems` elements of acc_t<T>
// (when non-zero) and passes both back, so that both sides agree on the
// workspace without the launcher allocating memory itself.
struct GradWeightPlan {
  bool generic;            // untiled fallback (needs no workspace)
  int threads;             // block size of the tiled kernel
  int tile_h, tile_w;      // output positions staged per step
  int patch_h, patch_w;    // input rows/columns those positions read
  int co_tile, ci_tile;    // weight tile of a block: co_tile x ci_tile x KH x KW
  int64_t slices;          // blocks sharing one weight tile (partial sums)
  int64_t workspace_elems; // slices * weight numel when slices > 1, else 0
};
template <typename T>
GradWeightPlan conv2d_direct_grad_weight_plan(const Conv2dParams& p);

// grad_weight = sum over n, oh, ow of grad_output x input patch. `workspace`
// holds plan.workspace_elems elements of acc_t<T> (may be null when 0).
// Deterministic: the partial sums are reduced in a fixed order.
template <typename T>
cudaError_t conv2d_direct_grad_weight(const Conv2dParams& p, const GradWeightPlan& plan, const T* grad_output,
                                      const T* input, T* grad_weight, acc_t<T>* workspace, cudaStream_t stream);

// grad_bias[c] = sum over n, h, w of grad_output[n, c, h, w], for a
// (batch, channels, plane) tensor. Deterministic (fixed-order block reduction).
template <typename T>
cudaError_t conv2d_grad_bias(int64_t batch, int64_t channels, int64_t plane, const T* grad_output, T* grad_bias,
                             cudaStream_t stream);

// ---------------------------------------------------------------------------
// conv2d, im2col algorithm (conv2d_im2col_kernel.cu)
//
// The thin layer walks the flattened output positions q = n * OH*OW + oh*OW + ow
// in chunks [q0, q0 + cols) and multiplies per group with cuBLAS; these
// kernels move data between NCHW tensors and the column matrices of a chunk.

// col[(ci*KH + kh)*KW + kw][j] = input[n, ci, oh*sh - pad + kh*dh, ow*sw - pad + kw*dw]
// (zero in the padding), for (n, oh, ow) = position q0 + j; rows for all
// C_in channels, so group g owns rows [g * col_rows, (g+1) * col_rows).
template <typename T, typename ColT>
cudaError_t im2col(const Conv2dParams& p, const T* input, ColT* col, int64_t q0, int64_t cols, cudaStream_t stream);

// The adjoint of im2col over the chunk: every input pixel of the images the
// chunk touches gathers the column entries that read it (no atomics). With
// accumulate=false the pixels are overwritten (the chunk must then cover whole
// images); with accumulate=true they are added to (the caller zeroed grad_input),
// which is how chunks that split an image into row bands combine.
template <typename T>
cudaError_t col2im(const Conv2dParams& p, const T* col, T* grad_input, int64_t q0, int64_t cols, bool accumulate,
                   cudaStream_t stream);

// out_cols[co][j] = grad_output[n, co, oh, ow] for position q0 + j (C_out rows):
// the GEMM operand of grad_input/grad_weight for the chunk.
template <typename T, typename ColT>
cudaError_t gather_output_columns(const Conv2dParams& p, const T* grad_output, ColT* out_cols, int64_t q0,
                                  int64_t cols, cudaStream_t stream);

// output[n, co, oh, ow] = res[co][j] (+ bias[co] when bias != nullptr) for
// position q0 + j: scatters the forward GEMM result of a chunk into NCHW.
template <typename T>
cudaError_t scatter_output_columns(const Conv2dParams& p, const T* res, const T* bias, T* output, int64_t q0,
                                   int64_t cols, cudaStream_t stream);

// dst[i] = (To)src[i], rounding to nearest. Used to narrow a float32
// accumulator into a float16/bfloat16 result.
template <typename From, typename To>
cudaError_t convert(const From* src, To* dst, int64_t n, cudaStream_t stream);

// ---------------------------------------------------------------------------
// max_pool2d (max_pool2d_kernel.cu)

// output and int64 indices (flat offsets within each input plane), with
// PyTorch's rules: first maximum in kh-then-kw order wins, NaN propagates
// (the last NaN wins), the initial index is the window's first in-bounds tap.
template <typename T>
cudaError_t max_pool2d_forward(const Pool2dParams& p, const T* input, T* output, int64_t* indices,
                               cudaStream_t stream);

// grad_input = 0, then grad_input[plane][indices[o]] += grad_output[o] for
// every output o whose index lies in [0, H*W). Only planes, in_h, in_w,
// out_h, out_w of `p` are read (the backward op carries no window geometry).
// `scratch` is used only for the 16-bit types: planes*in_h*in_w floats in
// which the sums accumulate before being rounded once into grad_input (it
// may be null for float and double). See max_pool2d_kernel.cu for when the
// result is bitwise deterministic.
template <typename T>
cudaError_t max_pool2d_backward(const Pool2dParams& p, const T* grad_output, const int64_t* indices, T* grad_input,
                                float* scratch, cudaStream_t stream);

// ---------------------------------------------------------------------------
// avg_pool2d and adaptive_avg_pool2d (avg_pool2d_kernel.cu); the windows and
// divisors are AvgPool2dParams' (params.h).

// output[o] = sum of the input over o's window / divisor(o).
template <typename T>
cudaError_t avg_pool2d_forward(const AvgPool2dParams& p, const T* input, T* output, cudaStream_t stream);

// grad_input[i] = sum over the outputs o whose window holds i of grad_output[o] / divisor(o): a
// gather, one thread per input element, bitwise deterministic. Writes every element of grad_input.
template <typename T>
cudaError_t avg_pool2d_backward(const AvgPool2dParams& p, const T* grad_output, T* grad_input, cudaStream_t stream);

}  // namespace launch
}  // namespace cuda
}  // namespace cnnext
