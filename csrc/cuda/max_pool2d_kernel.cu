// max_pool2d forward (values + int64 indices) and backward.
//
// Forward: one thread per output element, scanning its window in kh-then-kw
// order with PyTorch's exact rules (see max_pool_forward_kernel), so values
// and indices match torch.nn.functional.max_pool2d and the CPU backend bit
// for bit.
//
// Backward: the op hands the backend only grad_output, the indices and the
// input size (no window geometry), so it cannot gather over "the outputs
// whose window contains a pixel"; it scatters instead: each output adds its
// gradient at its index with an atomic add (into a float32 scratch buffer
// for float16/bfloat16, rounded once at the end). Determinism:
//  * windows that do not overlap (stride >= dilation*(kernel-1)+1, e.g. the
//    usual 2x2/2) give every input element at most one contribution, and
//    overlapping windows whose maxima land on distinct elements likewise:
//    the result is exact and bitwise reproducible;
//  * an element that is the maximum of two windows gets a+b, which is
//    commutative, so still reproducible;
//  * only an element chosen by three or more windows (overlapping windows,
//    e.g. 3x3/1 on a plateau) may differ in the last bit between runs,
//    because the floating-point sum then depends on the arrival order.
// Indices outside [0, H*W) are skipped, so nothing is written out of bounds
// whatever the indices hold.
#include "common.cuh"

#include <math.h>

namespace cnnext {
namespace cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;

template <typename T, typename index_t>
__global__ void max_pool_forward_kernel(const Pool2dParams p, const T* __restrict__ input, T* __restrict__ output,
                                        int64_t* __restrict__ indices) {
  using A = acc_t<T>;
  const index_t OH = static_cast<index_t>(p.out_h), OW = static_cast<index_t>(p.out_w);
  const index_t H = static_cast<index_t>(p.in_h), W = static_cast<index_t>(p.in_w);
  const index_t sh = static_cast<index_t>(p.stride_h), sw = static_cast<index_t>(p.stride_w);
  const index_t dh = static_cast<index_t>(p.dilation_h), dw = static_cast<index_t>(p.dilation_w);
  const index_t span_h = static_cast<index_t>((p.kernel_h - 1) * p.dilation_h + 1);
  const index_t span_w = static_cast<index_t>((p.kernel_w - 1) * p.dilation_w + 1);
  const index_t total = static_cast<index_t>(p.planes) * OH * OW;
  for (index_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<index_t>(blockDim.x) * gridDim.x) {
    const index_t ow = idx % OW;
    const index_t r = idx / OW;
    const index_t oh = r % OH, plane = r / OH;
    index_t hstart = oh * sh - static_cast<index_t>(p.pad_h);
    index_t wstart = ow * sw - static_cast<index_t>(p.pad_w);
    const index_t hend = min(hstart + span_h, H);
    const index_t wend = min(wstart + span_w, W);
    // First tap at or after 0, as PyTorch's `while (hstart < 0) hstart += dilation`.
    if (hstart < 0) hstart += (-hstart + dh - 1) / dh * dh;
    if (wstart < 0) wstart += (-wstart + dw - 1) / dw * dw;
    const T* in_p = input + int64_t(plane) * H * W;
    // Before any element is seen the index is the first in-bounds tap (even
    // when the window is empty, as PyTorch does), and the value -inf, so a
    // window of -inf keeps that first index.
    A maxval = A(-INFINITY);
    index_t maxidx = hstart * W + wstart;
    for (index_t h = hstart; h < hend; h += dh) {
      for (index_t w = wstart; w < wend; w += dw) {
        const A v = to_acc(ldg(in_p + h * W + w));
        // `v != v`: NaN always replaces the current max, so the last NaN wins.
        if (v > maxval || v != v) {
          maxval = v;
          maxidx = h * W + w;
        }
      }
    }
    output[idx] = from_acc<T>(maxval);
    indices[idx] = static_cast<int64_t>(maxidx);
  }
}

template <typename T, typename Dst, typename index_t>
__global__ void max_pool_backward_kernel(const Pool2dParams p, const T* __restrict__ grad_output,
                                         const int64_t* __restrict__ indices, Dst* __restrict__ dst) {
  const int64_t in_plane = p.in_h * p.in_w;
  const index_t out_plane = static_cast<index_t>(p.out_h * p.out_w);
  const index_t total = static_cast<index_t>(p.planes) * out_plane;
  for (index_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<index_t>(blockDim.x) * gridDim.x) {
    const int64_t k = __ldg(indices + idx);
    if (k < 0 || k >= in_plane) continue;
    const index_t plane = idx / out_plane;
    atomicAdd(dst + int64_t(plane) * in_plane + k, convert_to<Dst>(ldg(grad_output + idx)));
  }
}

bool pool_fits_int32(const Pool2dParams& p) {
  const int64_t limit = int64_t(1) << 28;
  const int64_t geometry[] = {p.in_h, p.in_w, p.pad_h, p.pad_w, p.stride_h, p.stride_w,
                              (p.kernel_h - 1) * p.dilation_h + 1, (p.kernel_w - 1) * p.dilation_w + 1};
  for (int64_t v : geometry) {
    if (v >= limit) return false;
  }
  return fits_int32(p.planes * p.in_h * p.in_w) && fits_int32(p.planes * p.out_h * p.out_w);
}

// Where the backward sums accumulate: grad_input itself for float and
// double, a float32 buffer for the 16-bit types.
template <typename T>
struct BackwardDst {
  using type = float;
};
template <>
struct BackwardDst<double> {
  using type = double;
};

}  // namespace

namespace launch {

template <typename T>
cudaError_t max_pool2d_forward(const Pool2dParams& p, const T* input, T* output, int64_t* indices,
                               cudaStream_t stream) {
  const int64_t total = p.planes * p.out_h * p.out_w;
  if (total == 0) return cudaSuccess;
  const unsigned int grid = grid_for(total, kThreads);
  if (pool_fits_int32(p)) {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, max_pool_forward_kernel<T, int>)(p, input, output, indices);
  } else {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, max_pool_forward_kernel<T, int64_t>)(p, input, output, indices);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t max_pool2d_backward(const Pool2dParams& p, const T* grad_output, const int64_t* indices, T* grad_input,
                                float* scratch, cudaStream_t stream) {
  using Dst = typename BackwardDst<T>::type;
  constexpr bool narrow = sizeof(T) < sizeof(Dst);
  const int64_t in_numel = p.planes * p.in_h * p.in_w;
  const int64_t out_numel = p.planes * p.out_h * p.out_w;
  if (in_numel == 0) return cudaSuccess;
  Dst* dst;
  if constexpr (narrow) {
    if (scratch == nullptr) return cudaErrorInvalidValue;
    dst = scratch;
  } else {
    dst = grad_input;
  }
  // All-zero bits are 0.0 in every supported type.
  cudaError_t err = cudaMemsetAsync(dst, 0, in_numel * sizeof(Dst), stream);
  if (err != cudaSuccess) return err;
  if (out_numel > 0) {
    const unsigned int grid = grid_for(out_numel, kThreads);
    if (fits_int32(out_numel)) {
      CNNEXT_LAUNCH(grid, kThreads, 0, stream, max_pool_backward_kernel<T, Dst, int>)(p, grad_output, indices, dst);
    } else {
      CNNEXT_LAUNCH(grid, kThreads, 0, stream, max_pool_backward_kernel<T, Dst, int64_t>)(p, grad_output, indices, dst);
    }
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if constexpr (narrow) {
    return convert<float, T>(scratch, grad_input, in_numel, stream);
  }
  return cudaSuccess;
}

#define CNNEXT_INSTANTIATE_POOL(T)                                                                        \
  template cudaError_t max_pool2d_forward<T>(const Pool2dParams&, const T*, T*, int64_t*, cudaStream_t);  \
  template cudaError_t max_pool2d_backward<T>(const Pool2dParams&, const T*, const int64_t*, T*, float*, \
                                              cudaStream_t);

CNNEXT_INSTANTIATE_POOL(float)
CNNEXT_INSTANTIATE_POOL(double)
CNNEXT_INSTANTIATE_POOL(__half)
CNNEXT_INSTANTIATE_POOL(__nv_bfloat16)
#undef CNNEXT_INSTANTIATE_POOL

}  // namespace launch
}  // namespace cuda
}  // namespace cnnext
