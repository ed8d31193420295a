// max_pool2d, CUDA backend: the torch side of max_pool2d_kernel.cu.
//
// csrc/max_pool2d.cpp has validated the arguments and allocated the outputs;
// this file picks the device and stream, dispatches on dtype and turns
// launch errors into exceptions. Host compiler only, CUDA builds only.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <type_traits>

#include "../max_pool2d.h"
#include "device_scalar.h"
#include "launchers.h"

namespace cnnext {
namespace cuda {

void max_pool2d_forward(const Pool2dParams& p, const at::Tensor& input, at::Tensor& output, at::Tensor& indices) {
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnnext_max_pool2d_forward_cuda", [&] {
    using T = dev_t<scalar_t>;
    C10_CUDA_CHECK(launch::max_pool2d_forward<T>(p, reinterpret_cast<const T*>(input.const_data_ptr<scalar_t>()),
                                                 reinterpret_cast<T*>(output.mutable_data_ptr<scalar_t>()),
                                                 indices.mutable_data_ptr<int64_t>(), stream));
  });
}

bool max_pool2d_backward(const Pool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                         at::Tensor& grad_input) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(), "cnnext_max_pool2d_backward_cuda", [&] {
        using T = dev_t<scalar_t>;
        // 16-bit gradients are summed in float32 and rounded once.
        at::Tensor scratch;
        float* scratch_ptr = nullptr;
        if constexpr (sizeof(T) < sizeof(float)) {
          scratch = at::empty({grad_input.numel()}, grad_output.options().dtype(at::kFloat));
          scratch_ptr = scratch.mutable_data_ptr<float>();
        }
        C10_CUDA_CHECK(launch::max_pool2d_backward<T>(
            p, reinterpret_cast<const T*>(grad_output.const_data_ptr<scalar_t>()), indices.const_data_ptr<int64_t>(),
            reinterpret_cast<T*>(grad_input.mutable_data_ptr<scalar_t>()), scratch_ptr, stream));
      });
  // The kernel skips indices outside the plane; whether there was one takes a
  // reduction and a copy of its two numbers to the host.
  if (indices.numel() == 0) return true;
  const auto bounds = at::aminmax(indices);
  const at::Tensor lo_hi = at::stack({std::get<0>(bounds), std::get<1>(bounds)}).cpu();
  const int64_t* v = lo_hi.const_data_ptr<int64_t>();
  return v[0] >= 0 && v[1] < p.in_plane();
}

}  // namespace cuda
}  // namespace cnnext
