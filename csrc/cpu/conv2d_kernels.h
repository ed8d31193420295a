// The CPU im2col convolution, for float and double; the direct one is in
// conv2d_direct/ (variants.h). conv2d_cpu.cpp runs the one the plan
// (conv2d_plan.h) picks and maps float16/bfloat16 onto float32.
#pragma once

#include <ATen/core/Tensor.h>

#include "../params.h"

namespace cnnext {
namespace cpu {

// im2col + GEMM. These take tensors because the GEMM is ATen's (MKL). The
// input, grad_input and weights are contiguous NCHW; the output and
// grad_output may also be channels_last (first layers of a channels_last
// model: conv2d_plan.h, nhwc_columns), which the GEMMs then read and write in
// place.
void im2col_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor& bias, at::Tensor& output);
void im2col_grad_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                       at::Tensor& grad_input);
void im2col_grad_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                        at::Tensor& grad_weight);

// im2col + GEMM on channels_last tensors with groups == 1, weights and their
// gradient channels_last too: GEMMs over the (N*H*W, C) pixel matrices, no
// transposes (conv2d_im2col_nhwc_kernel.cpp).
// im2col_nhwc says whether a pass whose operand and result are `a` and `b`
// takes this path (both channels_last-contiguous). grad_weight also sums
// grad_bias when it is defined.
bool im2col_nhwc(const Conv2dParams& p, const at::Tensor& a, const at::Tensor& b);
void im2col_nhwc_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, at::Tensor& output);
void im2col_nhwc_grad_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                            at::Tensor& grad_input);
void im2col_nhwc_grad_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                             at::Tensor& grad_weight, at::Tensor& grad_bias);

}  // namespace cpu
}  // namespace cnnext
