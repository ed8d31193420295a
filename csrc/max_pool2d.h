// max_pool2d: the backend entry points that csrc/max_pool2d.cpp dispatches to.
//
// max_pool2d.cpp checks the arguments, resolves the output size into a
// Pool2dParams and allocates the outputs; a backend only fills them. Tensors
// are contiguous, viewed as p.planes planes of H x W; indices are int64 flat
// offsets within each input plane, exactly as PyTorch returns them.
#pragma once

#include <ATen/core/Tensor.h>

#include "params.h"

namespace cnnext {

#define CNNEXT_DECLARE_POOL2D_BACKEND(ns)                                              \
  namespace ns {                                                                       \
  void max_pool2d_forward(const Pool2dParams& p, const at::Tensor& input,              \
                          at::Tensor& output, at::Tensor& indices);                    \
  /* grad_input = 0, then += grad_output at indices. Indices outside the plane     \
     are skipped, so a bad index never writes out of bounds; returns false if there \
     was one (the op then raises). */                                               \
  bool max_pool2d_backward(const Pool2dParams& p, const at::Tensor& grad_output,       \
                           const at::Tensor& indices, at::Tensor& grad_input);         \
  }

CNNEXT_DECLARE_POOL2D_BACKEND(cpu)
CNNEXT_DECLARE_POOL2D_BACKEND(cuda)

#undef CNNEXT_DECLARE_POOL2D_BACKEND

}  // namespace cnnext
