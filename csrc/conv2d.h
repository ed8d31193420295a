// conv2d: the backend entry points that csrc/conv2d.cpp dispatches to.
//
// conv2d.cpp checks every argument, computes the output shape into a
// Conv2dParams and allocates the outputs; a backend only fills them. All
// tensors passed here are contiguous NCHW (except in channels_last models,
// `channels_last`, where the CPU computes some layers' activations in that
// layout: conv2d.cpp's compute_layouts), on the same device, of the same
// floating dtype, and already shaped as `p` says; outputs are uninitialised.
#pragma once

#include <ATen/core/Tensor.h>

#include "params.h"

namespace cnnext {

enum class ConvAlgo { Direct, Im2col };

#define CNNEXT_DECLARE_CONV2D_BACKEND(ns)                                              \
  namespace ns {                                                                       \
  /* output = conv(input, weight) + bias; bias may be undefined. */                   \
  void conv2d_forward(ConvAlgo algo, const Conv2dParams& p, bool channels_last,        \
                      const at::Tensor& input, const at::Tensor& weight,               \
                      const at::Tensor& bias, at::Tensor& output);                     \
  /* grad_input = d(loss)/d(input) given grad_output. */                              \
  void conv2d_grad_input(ConvAlgo algo, const Conv2dParams& p, bool channels_last,     \
                         const at::Tensor& grad_output, const at::Tensor& weight,      \
                         at::Tensor& grad_input);                                      \
  /* grad_weight = d(loss)/d(weight) given grad_output; also grad_bias (as          \
     conv2d_grad_bias) when it is defined, in the same pass where the backend can. */ \
  void conv2d_grad_weight(ConvAlgo algo, const Conv2dParams& p, bool channels_last,    \
                          const at::Tensor& grad_output, const at::Tensor& input,      \
                          at::Tensor& grad_weight, at::Tensor& grad_bias);             \
  /* grad_bias[c] = sum over n, h, w of grad_output[n, c, h, w]. */                   \
  void conv2d_grad_bias(const at::Tensor& grad_output, at::Tensor& grad_bias);         \
  }

CNNEXT_DECLARE_CONV2D_BACKEND(cpu)
CNNEXT_DECLARE_CONV2D_BACKEND(cuda)

#undef CNNEXT_DECLARE_CONV2D_BACKEND

}  // namespace cnnext
