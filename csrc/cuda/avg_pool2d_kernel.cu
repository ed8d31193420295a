// avg_pool2d and adaptive_avg_pool2d, forward and backward.
//
// The windows and divisors come from AvgPool2dParams (params.h), the same
// code the CPU backend runs, so both backends agree on every border rule.
//
// Forward: one thread per output element sums its window (rows, then
// columns, in the accumulate type) and divides by the divisor; the global
// average (adaptive 1 x 1) instead gives each plane a block, which sums it
// with a fixed-shape tree reduction.
//
// Backward: a gather, one thread per input element: it sums
// grad_output[o] / divisor(o) over the outputs o whose windows hold it (a
// range of rows times a range of columns, AvgPoolAxis::cover_lo/hi). No
// atomics, every element written once: bitwise deterministic.
#include "common.cuh"

namespace cnnext {
namespace cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;

template <typename T, typename index_t>
__global__ void avg_pool_forward_kernel(const AvgPool2dParams p, const T* __restrict__ input,
                                        T* __restrict__ output) {
  using A = acc_t<T>;
  const index_t OH = static_cast<index_t>(p.h.out), OW = static_cast<index_t>(p.w.out);
  const index_t W = static_cast<index_t>(p.w.in);
  const index_t total = static_cast<index_t>(p.planes) * OH * OW;
  for (index_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<index_t>(blockDim.x) * gridDim.x) {
    const index_t ow = idx % OW;
    const index_t r = idx / OW;
    const index_t oh = r % OH, plane = r / OH;
    const T* in_p = input + int64_t(plane) * p.in_plane();
    const index_t h0 = static_cast<index_t>(p.h.start(oh)), h1 = static_cast<index_t>(p.h.end(oh));
    const index_t w0 = static_cast<index_t>(p.w.start(ow)), w1 = static_cast<index_t>(p.w.end(ow));
    A sum = A(0);
    for (index_t h = h0; h < h1; ++h)
      for (index_t w = w0; w < w1; ++w) sum += to_acc(ldg(in_p + h * W + w));
    output[idx] = from_acc<T>(sum / static_cast<A>(p.divisor(oh, ow)));
  }
}

// Global average: block b averages plane b (grid-stride over the planes).
template <typename T>
__global__ void global_avg_forward_kernel(int64_t planes, int64_t plane_size, const T* __restrict__ input,
                                          T* __restrict__ output) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  for (int64_t plane = blockIdx.x; plane < planes; plane += gridDim.x) {
    const T* in_p = input + plane * plane_size;
    A sum = A(0);
    for (int64_t i = threadIdx.x; i < plane_size; i += blockDim.x) sum += to_acc(ldg(in_p + i));
    sum = block_reduce_sum(sum, scratch);
    if (threadIdx.x == 0) output[plane] = from_acc<T>(sum / static_cast<A>(plane_size));
  }
}

template <typename T, typename index_t>
__global__ void avg_pool_backward_kernel(const AvgPool2dParams p, const T* __restrict__ grad_output,
                                         T* __restrict__ grad_input) {
  using A = acc_t<T>;
  const index_t H = static_cast<index_t>(p.h.in), W = static_cast<index_t>(p.w.in);
  const index_t OW = static_cast<index_t>(p.w.out);
  const index_t total = static_cast<index_t>(p.planes) * H * W;
  for (index_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<index_t>(blockDim.x) * gridDim.x) {
    const index_t iw = idx % W;
    const index_t r = idx / W;
    const index_t ih = r % H, plane = r / H;
    const T* g = grad_output + int64_t(plane) * p.out_plane();
    const index_t oh0 = static_cast<index_t>(p.h.cover_lo(ih)), oh1 = static_cast<index_t>(p.h.cover_hi(ih));
    const index_t ow0 = static_cast<index_t>(p.w.cover_lo(iw)), ow1 = static_cast<index_t>(p.w.cover_hi(iw));
    A sum = A(0);
    for (index_t oh = oh0; oh < oh1; ++oh)
      for (index_t ow = ow0; ow < ow1; ++ow)
        sum += to_acc(ldg(g + oh * OW + ow)) / static_cast<A>(p.divisor(oh, ow));
    grad_input[idx] = from_acc<T>(sum);
  }
}

bool avg_fits_int32(const AvgPool2dParams& p) {
  return fits_int32(p.planes * p.in_plane()) && fits_int32(p.planes * p.out_plane());
}

bool is_global(const AvgPool2dParams& p) { return p.h.adaptive && p.w.adaptive && p.h.out == 1 && p.w.out == 1; }

}  // namespace

namespace launch {

template <typename T>
cudaError_t avg_pool2d_forward(const AvgPool2dParams& p, const T* input, T* output, cudaStream_t stream) {
  const int64_t total = p.planes * p.out_plane();
  if (total == 0) return cudaSuccess;
  if (is_global(p)) {
    const int64_t cap = int64_t(1) << 20;
    const unsigned int grid = static_cast<unsigned int>(p.planes < cap ? p.planes : cap);
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, global_avg_forward_kernel<T>)(p.planes, p.in_plane(), input, output);
    return cudaGetLastError();
  }
  const unsigned int grid = grid_for(total, kThreads);
  if (avg_fits_int32(p)) {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, avg_pool_forward_kernel<T, int>)(p, input, output);
  } else {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, avg_pool_forward_kernel<T, int64_t>)(p, input, output);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t avg_pool2d_backward(const AvgPool2dParams& p, const T* grad_output, T* grad_input, cudaStream_t stream) {
  const int64_t total = p.planes * p.in_plane();
  if (total == 0) return cudaSuccess;
  const unsigned int grid = grid_for(total, kThreads);
  if (avg_fits_int32(p)) {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, avg_pool_backward_kernel<T, int>)(p, grad_output, grad_input);
  } else {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, avg_pool_backward_kernel<T, int64_t>)(p, grad_output, grad_input);
  }
  return cudaGetLastError();
}

#define CNNEXT_INSTANTIATE_AVG_POOL(T)                                                                  \
  template cudaError_t avg_pool2d_forward<T>(const AvgPool2dParams&, const T*, T*, cudaStream_t);       \
  template cudaError_t avg_pool2d_backward<T>(const AvgPool2dParams&, const T*, T*, cudaStream_t);

CNNEXT_INSTANTIATE_AVG_POOL(float)
CNNEXT_INSTANTIATE_AVG_POOL(double)
CNNEXT_INSTANTIATE_AVG_POOL(__half)
CNNEXT_INSTANTIATE_AVG_POOL(__nv_bfloat16)
#undef CNNEXT_INSTANTIATE_AVG_POOL

}  // namespace launch
}  // namespace cuda
}  // namespace cnnext
