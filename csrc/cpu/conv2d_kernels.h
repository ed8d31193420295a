// The CPU im2col convolution, for float and double; the direct one is in
// conv2d_direct/ (variants.h). conv2d_cpu.cpp runs the one the plan
// (conv2d_plan.h) picks and maps float16/bfloat16 onto float32.
#pragma once

#include <ATen/core/Tensor.h>

#include "../params.h"

namespace cnnext {
namespace cpu {

// im2col + GEMM. These take tensors because the GEMM is ATen's (MKL).
void im2col_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor& bias, at::Tensor& output);
void im2col_grad_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                       at::Tensor& grad_input);
void im2col_grad_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                        at::Tensor& grad_weight);

}  // namespace cpu
}  // namespace cnnext
