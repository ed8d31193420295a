// The CUDA scalar type a kernel is instantiated with for each ATen scalar
// type: the torch layer's dispatch on dtype hands the launchers pointers of
// these types. Host compiler only, CUDA builds only.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace cnnext {
namespace cuda {

// ATen's 16-bit scalar types share their layout with CUDA's, which the
// kernels are written against.
template <typename S>
struct DeviceScalar {
  using type = S;
};
template <>
struct DeviceScalar<at::Half> {
  using type = __half;
};
template <>
struct DeviceScalar<at::BFloat16> {
  using type = __nv_bfloat16;
};
template <typename S>
using dev_t = typename DeviceScalar<S>::type;
static_assert(sizeof(at::Half) == sizeof(__half) && alignof(at::Half) == alignof(__half));
static_assert(sizeof(at::BFloat16) == sizeof(__nv_bfloat16) && alignof(at::BFloat16) == alignof(__nv_bfloat16));

}  // namespace cuda
}  // namespace cnnext
