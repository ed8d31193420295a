// The CPU convolution of integer tensors (conv2d_integer_kernel.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include "../conv2d.h"

namespace cnnext {
namespace cpu {

// output = conv(input, weight) + bias for int8, uint8, int16, int32 or int64
// tensors, in their dtype with wrapping arithmetic, bit for bit what
// PyTorch's CPU convolution gives. Tensors as conv2d.h's backends get them
// (contiguous NCHW, one dtype, bias possibly undefined); forward only: PyTorch
// has no integer convolution backward, and the ops reject integer gradients.
void integer_conv2d_forward(ConvAlgo algo, const Conv2dParams& p, const at::Tensor& input,
                            const at::Tensor& weight, const at::Tensor& bias, at::Tensor& output);

}  // namespace cpu
}  // namespace cnnext
