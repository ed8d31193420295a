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

}  // namespace cpu
}  // namespace cnnext
