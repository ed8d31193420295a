// im2col + GEMM convolution on the CPU.
//
// For one sample and group, im2col lays every receptive field out as a
// column: col[(c, kh, kw)][(oh, ow)] = x[c][oh*sh - pt + kh*dh][ow*sw - pl + kw*dw]
// (zero outside the input). The convolution is then the GEMM
//   y (C_out/g x OH*OW) = W (C_out/g x K) * col (K x OH*OW),
// and its gradients are two more GEMMs, dcol = W^T * dy (scattered back by
// col2im) and dW += dy * col^T. Samples are spread over threads; each thread
// owns one sample-sized column buffer, so memory stays bounded whatever the
// batch, and the GEMMs run single-threaded inside the parallel region.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include "conv2d_kernels.h"
#include "kernel_utils.h"

namespace cnnext {
namespace cpu {
namespace {

template <typename T>
void im2col(const Conv2dParams& p, const T* x, T* col) {
  const int64_t plane = p.out_plane();
  for (int64_t c = 0; c < p.in_per_group(); ++c) {
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        const TapRange cols = valid_outputs(kw, p.in_w, p.out_w, p.stride_w, p.pad_left, p.dilation_w);
        const int64_t x_offset = kw * p.dilation_w - p.pad_left;
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          T* dst = col + oh * p.out_w;
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih < 0 || ih >= p.in_h) {
            std::fill(dst, dst + p.out_w, T(0));
            continue;
          }
          const T* src = x + (c * p.in_h + ih) * p.in_w + x_offset;
          std::fill(dst, dst + cols.lo, T(0));
          for (int64_t ow = cols.lo; ow < cols.hi; ++ow) dst[ow] = src[ow * p.stride_w];
          std::fill(dst + cols.hi, dst + p.out_w, T(0));
        }
        col += plane;
      }
    }
  }
}

// The adjoint of im2col: x[c][ih][iw] = sum of every column entry that im2col copied from there.
template <typename T>
void col2im(const Conv2dParams& p, const T* col, T* x) {
  const int64_t plane = p.out_plane();
  std::fill(x, x + p.in_per_group() * p.in_plane(), T(0));
  for (int64_t c = 0; c < p.in_per_group(); ++c) {
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        const TapRange cols = valid_outputs(kw, p.in_w, p.out_w, p.stride_w, p.pad_left, p.dilation_w);
        const int64_t x_offset = kw * p.dilation_w - p.pad_left;
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih < 0 || ih >= p.in_h) continue;
          const T* src = col + oh * p.out_w;
          T* dst = x + (c * p.in_h + ih) * p.in_w + x_offset;
          for (int64_t ow = cols.lo; ow < cols.hi; ++ow) dst[ow * p.stride_w] += src[ow];
        }
        col += plane;
      }
    }
  }
}

// at::parallel_for over [0, n) whose workers see the caller's thread-local state (in particular
// that autograd is off), since they call ATen's GEMM.
template <typename Fn>
void parallel_gemms(int64_t n, const Fn& fn) {
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    at::ThreadLocalStateGuard guard(caller_state);
    fn(begin, end);
  });
}

// Per-thread column buffer of one sample and group: (K, OH*OW).
at::Tensor column_buffer(const Conv2dParams& p, const at::Tensor& like) {
  return at::empty({p.col_rows(), p.out_plane()}, like.options());
}

// The (C_out/g, K) weight matrix of group g.
at::Tensor weight_matrix(const Conv2dParams& p, const at::Tensor& weight, int64_t g) {
  return weight.view({p.groups, p.out_per_group(), p.col_rows()}).select(0, g);
}

// The (channels/g, H*W) slice of sample n, group g of an NCHW tensor.
at::Tensor group_matrix(const at::Tensor& t, int64_t groups, int64_t n, int64_t g) {
  const int64_t per_group = t.size(1) / groups;
  return t.select(0, n).narrow(0, g * per_group, per_group).view({per_group, t.size(2) * t.size(3)});
}

}  // namespace

void im2col_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cnnext_im2col_forward", [&] {
    parallel_gemms(p.batch, [&](int64_t begin, int64_t end) {
      at::Tensor col = column_buffer(p, input);
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t g = 0; g < p.groups; ++g) {
          im2col(p, group_matrix(input, p.groups, n, g).const_data_ptr<scalar_t>(), col.mutable_data_ptr<scalar_t>());
          at::Tensor y = group_matrix(output, p.groups, n, g);
          if (bias.defined()) {
            at::addmm_out(y, bias.narrow(0, g * p.out_per_group(), p.out_per_group()).unsqueeze(1),
                          weight_matrix(p, weight, g), col);
          } else {
            at::mm_out(y, weight_matrix(p, weight, g), col);
          }
        }
      }
    });
  });
}

void im2col_grad_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                       at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_im2col_grad_input", [&] {
    parallel_gemms(p.batch, [&](int64_t begin, int64_t end) {
      at::Tensor col = column_buffer(p, grad_output);
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t g = 0; g < p.groups; ++g) {
          at::mm_out(col, weight_matrix(p, weight, g).t(), group_matrix(grad_output, p.groups, n, g));
          col2im(p, col.const_data_ptr<scalar_t>(),
                 group_matrix(grad_input, p.groups, n, g).mutable_data_ptr<scalar_t>());
        }
      }
    });
  });
}

void im2col_grad_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                        at::Tensor& grad_weight) {
  // One chunk of the batch per thread, each with its own partial dW, summed in chunk order.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), p.batch));
  at::Tensor partials = at::zeros({chunks, p.groups, p.out_per_group(), p.col_rows()}, grad_output.options());
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_im2col_grad_weight", [&] {
    parallel_gemms(chunks, [&](int64_t chunk_begin, int64_t chunk_end) {
      at::Tensor col = column_buffer(p, input);
      for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
        for (int64_t n = chunk * p.batch / chunks; n < (chunk + 1) * p.batch / chunks; ++n) {
          for (int64_t g = 0; g < p.groups; ++g) {
            im2col(p, group_matrix(input, p.groups, n, g).const_data_ptr<scalar_t>(),
                   col.mutable_data_ptr<scalar_t>());
            partials.select(0, chunk).select(0, g).addmm_(group_matrix(grad_output, p.groups, n, g), col.t());
          }
        }
      }
    });
  });
  at::Tensor flat = grad_weight.view({1, -1});
  at::sum_out(flat, partials.view({chunks, -1}), 0, /*keepdim=*/true);
}

}  // namespace cpu
}  // namespace cnnext
