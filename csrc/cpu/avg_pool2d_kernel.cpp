// Average pooling (avg_pool2d and adaptive_avg_pool2d) on the CPU.
//
// Both ops are separable (params.h, AvgPoolAxis), and so are the kernels:
// forward sums the rows of each output row's window into one row of
// accumulators (elementwise adds over the full width, which vectorize),
// then sums that row over each output's columns; backward is the adjoint,
// a gather per input row: the scaled gradients of the output rows whose
// windows hold the row are summed, then spread over the columns in a fixed
// order. Every output and every input gradient is written by one thread in
// one fixed order (no atomics): results are deterministic. Planes are split
// across threads. float16/bfloat16 accumulate in float32; int64 (as PyTorch
// takes it) sums with wrap-around and divides truncating toward zero.
//
// The horizontal passes of avg_pool2d run one kernel tap at a time over the
// outputs whose tap lands inside the input (valid_outputs), with the stride
// known at compile time when it is 1 or 2, so they vectorize too; adaptive
// windows vary in width and take a plain loop per output. The global
// average (adaptive output 1 x 1) is a straight sum of each plane. The loops
// live in pool_loops.h, compiled once per ISA; the one cnnext.set_cpu_isa()
// allows runs (variants.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "../avg_pool2d.h"
#include "isa.h"
#include "variants.h"

namespace cnnext {
namespace cpu {

void avg_pool2d_forward(const AvgPool2dParams& p, const at::Tensor& input, at::Tensor& output) {
  // int64 as PyTorch's CPU average pool takes it (pool_loops.h's AvgMath).
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kLong, input.scalar_type(), "cnnext_avg_pool2d", [&] {
    const auto& loops = pool_loops<scalar_t>(active_isa());
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    scalar_t* y = output.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, p.planes, 1, [&](int64_t begin, int64_t end) {
      loops.avg_forward(p, x + begin * p.in_plane(), end - begin, y + begin * p.out_plane());
    });
  });
}

void avg_pool2d_backward(const AvgPool2dParams& p, const at::Tensor& grad_output, at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kLong, grad_output.scalar_type(),
                                  "cnnext_avg_pool2d_bwd", [&] {
    const auto& loops = pool_loops<scalar_t>(active_isa());
    const scalar_t* gy = grad_output.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_input.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, p.planes, 1, [&](int64_t begin, int64_t end) {
      loops.avg_backward(p, gy + begin * p.out_plane(), end - begin, gx + begin * p.in_plane());
    });
  });
}

}  // namespace cpu
}  // namespace cnnext
