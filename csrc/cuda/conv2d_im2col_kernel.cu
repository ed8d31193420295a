// conv2d, im2col algorithm: the data-movement kernels around the cuBLAS GEMMs
// of conv2d_cuda.cpp.
//
// A chunk is a range [q0, q0 + cols) of flattened output positions
// q = n * OH*OW + oh * OW + ow, so one chunk may hold several whole images
// (small layers: few, large GEMMs) or a band of rows of one image (huge
// images: bounded column buffer). Column matrices are row-major with `cols`
// columns: row (ci*KH + kh)*KW + kw of im2col, row co of the output side.
//
// Index arithmetic runs in 32 bits when every flat index of the call fits
// (int32 division is several times cheaper than int64), else in 64 bits;
// memory offsets are always formed in 64 bits.
#include "common.cuh"

namespace cnnext {
namespace cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T zero() {
  return from_acc<T>(acc_t<T>(0));
}

// One thread per (input channel, column): it writes that column's KH*KW rows,
// each write coalesced with the neighbouring threads' columns.
template <typename T, typename ColT, typename index_t>
__global__ void im2col_kernel(const Conv2dParams p, const T* __restrict__ input, ColT* __restrict__ col,
                              int64_t q0, index_t cols) {
  const index_t total = static_cast<index_t>(p.in_channels) * cols;
  const index_t P = static_cast<index_t>(p.out_h * p.out_w), OW = static_cast<index_t>(p.out_w);
  const index_t H = static_cast<index_t>(p.in_h), W = static_cast<index_t>(p.in_w);
  const index_t KH = static_cast<index_t>(p.kernel_h), KW = static_cast<index_t>(p.kernel_w);
  for (index_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<index_t>(blockDim.x) * gridDim.x) {
    const index_t ci = idx / cols, j = idx - ci * cols;
    const index_t q = static_cast<index_t>(q0) + j;
    const index_t n = q / P, pos = q - n * P;
    const index_t oh = pos / OW, ow = pos - oh * OW;
    const index_t ih0 = oh * static_cast<index_t>(p.stride_h) - static_cast<index_t>(p.pad_top);
    const index_t iw0 = ow * static_cast<index_t>(p.stride_w) - static_cast<index_t>(p.pad_left);
    const T* in_c = input + (int64_t(n) * p.in_channels + ci) * p.in_h * p.in_w;
    ColT* dst = col + int64_t(ci) * KH * KW * cols + j;
    for (index_t kh = 0; kh < KH; ++kh) {
      const index_t ih = ih0 + kh * static_cast<index_t>(p.dilation_h);
      const bool row_in = ih >= 0 && ih < H;
      for (index_t kw = 0; kw < KW; ++kw) {
        const index_t iw = iw0 + kw * static_cast<index_t>(p.dilation_w);
        ColT v = zero<ColT>();
        if (row_in && iw >= 0 && iw < W) v = convert_to<ColT>(ldg(in_c + int64_t(ih) * W + iw));
        *dst = v;
        dst += cols;
      }
    }
  }
}

// One thread per input pixel of the rows [ih_lo, ih_lo + rows) of images
// [n_first, n_first + n_count): it sums, in a fixed tap order, the column
// entries of this chunk that were read from it. Every output pixel is
// written by exactly one thread, hence no atomics and reproducible bits.
template <typename T, typename index_t>
__global__ void col2im_kernel(const Conv2dParams p, const T* __restrict__ col, T* __restrict__ grad_input,
                              int64_t q0, int64_t cols, int64_t n_first, index_t n_count, index_t ih_lo,
                              index_t rows, bool accumulate) {
  using A = acc_t<T>;
  const index_t C = static_cast<index_t>(p.in_channels), W = static_cast<index_t>(p.in_w);
  const index_t total = n_count * C * rows * W;
  const index_t KH = static_cast<index_t>(p.kernel_h), KW = static_cast<index_t>(p.kernel_w);
  const index_t sh = static_cast<index_t>(p.stride_h), sw = static_cast<index_t>(p.stride_w);
  const index_t dh = static_cast<index_t>(p.dilation_h), dw = static_cast<index_t>(p.dilation_w);
  const index_t pt = static_cast<index_t>(p.pad_top), pl = static_cast<index_t>(p.pad_left);
  const index_t OH = static_cast<index_t>(p.out_h), OW = static_cast<index_t>(p.out_w);
  const int64_t P = p.out_h * p.out_w;
  for (index_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<index_t>(blockDim.x) * gridDim.x) {
    const index_t iw = idx % W;
    index_t r = idx / W;
    const index_t ih = ih_lo + r % rows;
    r /= rows;
    const index_t ci = r % C;
    const int64_t n = n_first + r / C;
    const T* col_c = col + int64_t(ci) * KH * KW * cols;
    const int64_t q_img = n * P - q0;  // column of (oh, ow) = (0, 0) of this image
    A acc = A(0);
    for (index_t kh = 0; kh < KH; ++kh) {
      const index_t th = ih + pt - kh * dh;
      if (th < 0) break;  // decreasing in kh
      if (th % sh != 0) continue;
      const index_t oh = th / sh;
      if (oh >= OH) continue;
      for (index_t kw = 0; kw < KW; ++kw) {
        const index_t tw = iw + pl - kw * dw;
        if (tw < 0) break;
        if (tw % sw != 0) continue;
        const index_t ow = tw / sw;
        if (ow >= OW) continue;
        const int64_t j = q_img + int64_t(oh) * OW + ow;
        if (j < 0 || j >= cols) continue;  // read by another chunk
        acc += to_acc(ldg(col_c + int64_t(kh * KW + kw) * cols + j));
      }
    }
    T* dst = grad_input + ((n * p.in_channels + ci) * p.in_h + ih) * p.in_w + iw;
    *dst = from_acc<T>(accumulate ? to_acc(*dst) + acc : acc);
  }
}

// out_cols[co][j] = grad_output[n, co, pos(q0 + j)].
template <typename T, typename ColT, typename index_t>
__global__ void gather_columns_kernel(const Conv2dParams p, const T* __restrict__ grad_output,
                                      ColT* __restrict__ out_cols, int64_t q0, index_t cols) {
  const index_t total = static_cast<index_t>(p.out_channels) * cols;
  const index_t P = static_cast<index_t>(p.out_h * p.out_w);
  for (index_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<index_t>(blockDim.x) * gridDim.x) {
    const index_t co = idx / cols, j = idx - co * cols;
    const index_t q = static_cast<index_t>(q0) + j;
    const index_t n = q / P, pos = q - n * P;
    out_cols[idx] = convert_to<ColT>(ldg(grad_output + (int64_t(n) * p.out_channels + co) * P + pos));
  }
}

// output[n, co, pos(q0 + j)] = res[co][j] + bias[co].
template <typename T, typename index_t>
__global__ void scatter_columns_kernel(const Conv2dParams p, const T* __restrict__ res, const T* __restrict__ bias,
                                       T* __restrict__ output, int64_t q0, index_t cols) {
  using A = acc_t<T>;
  const index_t total = static_cast<index_t>(p.out_channels) * cols;
  const index_t P = static_cast<index_t>(p.out_h * p.out_w);
  for (index_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<index_t>(blockDim.x) * gridDim.x) {
    const index_t co = idx / cols, j = idx - co * cols;
    const index_t q = static_cast<index_t>(q0) + j;
    const index_t n = q / P, pos = q - n * P;
    A v = to_acc(ldg(res + idx));
    if (bias != nullptr) v += to_acc(ldg(bias + co));
    output[(int64_t(n) * p.out_channels + co) * P + pos] = from_acc<T>(v);
  }
}

template <typename From, typename To>
__global__ void convert_kernel(const From* __restrict__ src, To* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    dst[i] = convert_to<To>(ldg(src + i));
  }
}

// Whether every index the chunk kernels form fits in 32 bits: flat indices,
// and sums of a coordinate, a padding and a dilated tap.
bool chunk_fits_int32(const Conv2dParams& p, int64_t q0, int64_t cols) {
  const int64_t P = p.out_h * p.out_w;
  const int64_t limit = int64_t(1) << 28;
  const int64_t geometry[] = {p.in_h,     p.in_w,
                              p.pad_top,  p.pad_left,
                              p.stride_h, p.stride_w,
                              (p.kernel_h - 1) * p.dilation_h, (p.kernel_w - 1) * p.dilation_w,
                              p.kernel_h * p.kernel_w};
  for (int64_t v : geometry) {
    if (v >= limit) return false;
  }
  return fits_int32(p.batch * p.in_channels * p.in_h * p.in_w) && fits_int32(p.batch * p.out_channels * P) &&
         fits_int32(q0 + cols) && fits_int32(std::max(p.in_channels, p.out_channels) * cols);
}

}  // namespace

namespace launch {

template <typename T, typename ColT>
cudaError_t im2col(const Conv2dParams& p, const T* input, ColT* col, int64_t q0, int64_t cols, cudaStream_t stream) {
  const int64_t total = p.in_channels * cols;
  if (total == 0) return cudaSuccess;
  const unsigned int grid = grid_for(total, kThreads);
  if (chunk_fits_int32(p, q0, cols)) {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, im2col_kernel<T, ColT, int>)(p, input, col, q0, static_cast<int>(cols));
  } else {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, im2col_kernel<T, ColT, int64_t>)(p, input, col, q0, cols);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t col2im(const Conv2dParams& p, const T* col, T* grad_input, int64_t q0, int64_t cols, bool accumulate,
                   cudaStream_t stream) {
  const int64_t P = p.out_h * p.out_w;
  if (cols == 0 || P == 0 || p.in_channels == 0) return cudaSuccess;
  // Overwriting is only right when this chunk is the sole reader of its images.
  if (!accumulate && (q0 % P != 0 || (q0 + cols) % P != 0)) return cudaErrorInvalidValue;
  const int64_t n_first = q0 / P, n_last = (q0 + cols - 1) / P;
  int64_t ih_lo = 0, ih_hi = p.in_h;
  if (accumulate && n_first == n_last) {
    // A band of one image adds into a zeroed grad_input: only the input rows its output rows read. (Whole
    // images overwrite every row, those no output reads too: they get zeros.)
    const int64_t oh_a = (q0 - n_first * P) / p.out_w, oh_b = (q0 + cols - 1 - n_first * P) / p.out_w;
    ih_lo = std::max<int64_t>(0, oh_a * p.stride_h - p.pad_top);
    ih_hi = std::min<int64_t>(p.in_h, oh_b * p.stride_h - p.pad_top + (p.kernel_h - 1) * p.dilation_h + 1);
    if (ih_hi <= ih_lo) return cudaSuccess;
  }
  const int64_t n_count = n_last - n_first + 1, rows = ih_hi - ih_lo;
  const int64_t total = n_count * p.in_channels * rows * p.in_w;
  const unsigned int grid = grid_for(total, kThreads);
  if (fits_int32(total) && chunk_fits_int32(p, q0, cols)) {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, col2im_kernel<T, int>)(p, col, grad_input, q0, cols, n_first,
                                                                 static_cast<int>(n_count), static_cast<int>(ih_lo),
                                                                 static_cast<int>(rows), accumulate);
  } else {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, col2im_kernel<T, int64_t>)(p, col, grad_input, q0, cols, n_first, n_count,
                                                                     ih_lo, rows, accumulate);
  }
  return cudaGetLastError();
}

template <typename T, typename ColT>
cudaError_t gather_output_columns(const Conv2dParams& p, const T* grad_output, ColT* out_cols, int64_t q0,
                                  int64_t cols, cudaStream_t stream) {
  const int64_t total = p.out_channels * cols;
  if (total == 0) return cudaSuccess;
  const unsigned int grid = grid_for(total, kThreads);
  if (chunk_fits_int32(p, q0, cols)) {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, gather_columns_kernel<T, ColT, int>)(p, grad_output, out_cols, q0,
                                                                               static_cast<int>(cols));
  } else {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, gather_columns_kernel<T, ColT, int64_t>)(p, grad_output, out_cols, q0,
                                                                                   cols);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t scatter_output_columns(const Conv2dParams& p, const T* res, const T* bias, T* output, int64_t q0,
                                   int64_t cols, cudaStream_t stream) {
  const int64_t total = p.out_channels * cols;
  if (total == 0) return cudaSuccess;
  const unsigned int grid = grid_for(total, kThreads);
  if (chunk_fits_int32(p, q0, cols)) {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, scatter_columns_kernel<T, int>)(p, res, bias, output, q0,
                                                                          static_cast<int>(cols));
  } else {
    CNNEXT_LAUNCH(grid, kThreads, 0, stream, scatter_columns_kernel<T, int64_t>)(p, res, bias, output, q0, cols);
  }
  return cudaGetLastError();
}

template <typename From, typename To>
cudaError_t convert(const From* src, To* dst, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  CNNEXT_LAUNCH(grid_for(n, kThreads), kThreads, 0, stream, convert_kernel<From, To>)(src, dst, n);
  return cudaGetLastError();
}

#define CNNEXT_INSTANTIATE_IM2COL(T, ColT)                                                                  \
  template cudaError_t im2col<T, ColT>(const Conv2dParams&, const T*, ColT*, int64_t, int64_t, cudaStream_t); \
  template cudaError_t gather_output_columns<T, ColT>(const Conv2dParams&, const T*, ColT*, int64_t, int64_t, \
                                                      cudaStream_t);

#define CNNEXT_INSTANTIATE_COL2IM(T)                                                                           \
  template cudaError_t col2im<T>(const Conv2dParams&, const T*, T*, int64_t, int64_t, bool, cudaStream_t);     \
  template cudaError_t scatter_output_columns<T>(const Conv2dParams&, const T*, const T*, T*, int64_t, int64_t, \
                                                 cudaStream_t);

CNNEXT_INSTANTIATE_IM2COL(float, float)
CNNEXT_INSTANTIATE_IM2COL(double, double)
CNNEXT_INSTANTIATE_IM2COL(__half, __half)
CNNEXT_INSTANTIATE_IM2COL(__nv_bfloat16, __nv_bfloat16)
// 16-bit grad_weight accumulates its GEMMs in float32.
CNNEXT_INSTANTIATE_IM2COL(__half, float)
CNNEXT_INSTANTIATE_IM2COL(__nv_bfloat16, float)

CNNEXT_INSTANTIATE_COL2IM(float)
CNNEXT_INSTANTIATE_COL2IM(double)
CNNEXT_INSTANTIATE_COL2IM(__half)
CNNEXT_INSTANTIATE_COL2IM(__nv_bfloat16)

template cudaError_t convert<float, __half>(const float*, __half*, int64_t, cudaStream_t);
template cudaError_t convert<float, __nv_bfloat16>(const float*, __nv_bfloat16*, int64_t, cudaStream_t);

#undef CNNEXT_INSTANTIATE_IM2COL
#undef CNNEXT_INSTANTIATE_COL2IM

}  // namespace launch
}  // namespace cuda
}  // namespace cnnext
