// avg_pool2d and adaptive_avg_pool2d: the backend entry points that
// csrc/avg_pool2d.cpp dispatches to.
//
// avg_pool2d.cpp checks the arguments, resolves both ops' windows into an
// AvgPool2dParams (params.h, the one place that says which input positions
// each output averages and by what divisor) and allocates the outputs; a
// backend only fills them. Tensors are contiguous, viewed as p.planes planes.
#pragma once

#include <ATen/core/Tensor.h>

#include "params.h"

namespace cnnext {

#define CNNEXT_DECLARE_AVG_POOL2D_BACKEND(ns)                                                              \
  namespace ns {                                                                                           \
  /* output[o] = sum of the input over o's window / its divisor. */                                        \
  void avg_pool2d_forward(const AvgPool2dParams& p, const at::Tensor& input, at::Tensor& output);          \
  /* grad_input[i] = sum over the outputs o whose window holds i of grad_output[o] / divisor(o), gathered \
     per input element (deterministic, no atomics); writes every element of grad_input. */                \
  void avg_pool2d_backward(const AvgPool2dParams& p, const at::Tensor& grad_output, at::Tensor& grad_input); \
  }

CNNEXT_DECLARE_AVG_POOL2D_BACKEND(cpu)
CNNEXT_DECLARE_AVG_POOL2D_BACKEND(cuda)

#undef CNNEXT_DECLARE_AVG_POOL2D_BACKEND

}  // namespace cnnext
