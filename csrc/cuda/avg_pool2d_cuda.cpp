// avg_pool2d and adaptive_avg_pool2d, CUDA backend: the torch side of
// avg_pool2d_kernel.cu.
//
// csrc/avg_pool2d.cpp has validated the arguments and allocated the outputs;
// this file picks the device and stream, dispatches on dtype and turns
// launch errors into exceptions. Host compiler only, CUDA builds only.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../avg_pool2d.h"
#include "device_scalar.h"
#include "launchers.h"

namespace cnnext {
namespace cuda {

void avg_pool2d_forward(const AvgPool2dParams& p, const at::Tensor& input, at::Tensor& output) {
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnnext_avg_pool2d_forward_cuda", [&] {
    using T = dev_t<scalar_t>;
    C10_CUDA_CHECK(launch::avg_pool2d_forward<T>(p, reinterpret_cast<const T*>(input.const_data_ptr<scalar_t>()),
                                                 reinterpret_cast<T*>(output.mutable_data_ptr<scalar_t>()), stream));
  });
}

void avg_pool2d_backward(const AvgPool2dParams& p, const at::Tensor& grad_output, at::Tensor& grad_input) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(), "cnnext_avg_pool2d_backward_cuda", [&] {
        using T = dev_t<scalar_t>;
        C10_CUDA_CHECK(launch::avg_pool2d_backward<T>(
            p, reinterpret_cast<const T*>(grad_output.const_data_ptr<scalar_t>()),
            reinterpret_cast<T*>(grad_input.mutable_data_ptr<scalar_t>()), stream));
      });
}

}  // namespace cuda
}  // namespace cnnext
