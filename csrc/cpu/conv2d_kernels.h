// The CPU convolution algorithms, for float and double. conv2d_cpu.cpp
// picks one per call and maps float16/bfloat16 onto float32.
#pragma once

#include <ATen/core/Tensor.h>

#include "../params.h"

namespace cnnext {
namespace cpu {

template <typename T>
void direct_forward(const Conv2dParams& p, const T* input, const T* weight, const T* bias, T* output);
template <typename T>
void direct_grad_input(const Conv2dParams& p, const T* grad_output, const T* weight, T* grad_input);
// Also grad_bias[c] = sum of grad_output[n][c] when grad_bias is not null,
// summed while grad_weight's pass has the planes in cache.
template <typename T>
void direct_grad_weight(const Conv2dParams& p, const T* grad_output, const T* input, T* grad_weight,
                        T* grad_bias);

// The depthwise family of the direct algorithm (conv2d_depthwise_kernel.cpp), for the
// convolutions params.h's is_depthwise() names.
template <typename T>
void depthwise_forward(const Conv2dParams& p, const T* input, const T* weight, const T* bias, T* output);
template <typename T>
void depthwise_grad_input(const Conv2dParams& p, const T* grad_output, const T* weight, T* grad_input);
template <typename T>
void depthwise_grad_weight(const Conv2dParams& p, const T* grad_output, const T* input, T* grad_weight,
                           T* grad_bias);

// The sum of x[0:n], vectorized for the widest ISA the CPU has.
float plane_sum(const float* x, int64_t n);
double plane_sum(const double* x, int64_t n);

// im2col + GEMM. These take tensors because the GEMM is ATen's (MKL).
void im2col_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor& bias, at::Tensor& output);
void im2col_grad_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                       at::Tensor& grad_input);
void im2col_grad_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                        at::Tensor& grad_weight);

// Pointwise convolutions (params.h) with groups == 1 on channels_last tensors:
// one GEMM over the (N*H*W, C) pixel matrices, no transposes. pointwise_nhwc
// says whether a pass whose operand and result are `a` and `b` takes this path
// (both channels_last-contiguous). grad_weight also sums grad_bias when it is defined.
bool pointwise_nhwc(const Conv2dParams& p, const at::Tensor& a, const at::Tensor& b);
void pointwise_nhwc_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, at::Tensor& output);
void pointwise_nhwc_grad_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                               at::Tensor& grad_input);
void pointwise_nhwc_grad_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                                at::Tensor& grad_weight, at::Tensor& grad_bias);

}  // namespace cpu
}  // namespace cnnext
