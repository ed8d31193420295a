// conv2d, CUDA backend: the torch side of the kernels in conv2d_*_kernel.cu.
//
// csrc/conv2d.cpp has validated the arguments and allocated the outputs;
// this file only picks the device and stream, dispatches on dtype, drives the
// im2col chunks and cuBLAS GEMMs, and turns launch errors into exceptions.
// Compiled by the host compiler in CUDA builds only; it includes c10's CUDA
// headers but not ATen/cuda/CUDAContext.h (which needs cuBLAS headers), so
// tools/check_cuda_compile.sh can syntax-check it on a GPU-less machine.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "../conv2d.h"
#include "device_scalar.h"
#include "im2col_chunks.h"
#include "launchers.h"

namespace cnnext {
namespace cuda {
namespace {

template <typename S>
const dev_t<S>* in_ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const dev_t<S>*>(t.const_data_ptr<S>()) : nullptr;
}
template <typename S>
dev_t<S>* out_ptr(at::Tensor& t) {
  return reinterpret_cast<dev_t<S>*>(t.mutable_data_ptr<S>());
}

// Launch calls below are wrapped in C10_CUDA_CHECK((...)): the extra
// parentheses keep the commas of template argument lists out of the macro's
// arguments.
cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// The dtype the kernels accumulate T in (for workspaces).
template <typename T>
constexpr at::ScalarType acc_scalar_type() {
  return std::is_same_v<launch::acc_t<T>, double> ? at::kDouble : at::kFloat;
}

// A (rows x cols) row-major view of the start of a flat buffer.
at::Tensor matrix(const at::Tensor& flat, int64_t rows, int64_t cols) {
  return flat.narrow(0, 0, rows * cols).view({rows, cols});
}

template <typename S>
void forward_im2col(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    at::Tensor& output, cudaStream_t stream) {
  using T = dev_t<S>;
  const int64_t K = p.col_rows(), all_rows = p.in_channels * p.kernel_plane();
  const int64_t cout_pg = p.out_per_group();
  const Chunking ch = plan_chunks(p, (all_rows + p.out_channels) * int64_t(sizeof(T)));
  const at::Tensor col_buf = at::empty({all_rows * ch.max_cols}, input.options());
  const at::Tensor res_buf = at::empty({p.out_channels * ch.max_cols}, input.options());
  const at::Tensor w2d = weight.view({p.out_channels, K});
  for_each_chunk(p, ch, [&](int64_t q0, int64_t cols) {
    at::Tensor col = matrix(col_buf, all_rows, cols);
    at::Tensor res = matrix(res_buf, p.out_channels, cols);
    C10_CUDA_CHECK((launch::im2col<T, T>(p, in_ptr<S>(input), out_ptr<S>(col), q0, cols, stream)));
    for (int64_t g = 0; g < p.groups; ++g) {
      at::Tensor res_g = res.narrow(0, g * cout_pg, cout_pg);
      at::mm_out(res_g, w2d.narrow(0, g * cout_pg, cout_pg), col.narrow(0, g * K, K));
    }
    C10_CUDA_CHECK((
        launch::scatter_output_columns<T>(p, in_ptr<S>(res), in_ptr<S>(bias), out_ptr<S>(output), q0, cols, stream)));
  });
}

template <typename S>
void grad_input_im2col(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                       at::Tensor& grad_input, cudaStream_t stream) {
  using T = dev_t<S>;
  const int64_t K = p.col_rows(), all_rows = p.in_channels * p.kernel_plane();
  const int64_t cout_pg = p.out_per_group();
  const Chunking ch = plan_chunks(p, (all_rows + p.out_channels) * int64_t(sizeof(T)));
  const at::Tensor col_buf = at::empty({all_rows * ch.max_cols}, grad_output.options());
  const at::Tensor gcol_buf = at::empty({p.out_channels * ch.max_cols}, grad_output.options());
  const at::Tensor w2d = weight.view({p.out_channels, K});
  // Row bands of one image add into the same pixels; whole images overwrite.
  if (!ch.whole_images) grad_input.zero_();
  for_each_chunk(p, ch, [&](int64_t q0, int64_t cols) {
    at::Tensor col = matrix(col_buf, all_rows, cols);
    at::Tensor gcol = matrix(gcol_buf, p.out_channels, cols);
    C10_CUDA_CHECK(
        (launch::gather_output_columns<T, T>(p, in_ptr<S>(grad_output), out_ptr<S>(gcol), q0, cols, stream)));
    for (int64_t g = 0; g < p.groups; ++g) {
      at::Tensor col_g = col.narrow(0, g * K, K);
      at::mm_out(col_g, w2d.narrow(0, g * cout_pg, cout_pg).t(), gcol.narrow(0, g * cout_pg, cout_pg));
    }
    C10_CUDA_CHECK((
        launch::col2im<T>(p, in_ptr<S>(col), out_ptr<S>(grad_input), q0, cols, !ch.whole_images, stream)));
  });
}

template <typename S>
void grad_weight_im2col(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                        at::Tensor& grad_weight, cudaStream_t stream) {
  using T = dev_t<S>;
  // 16-bit gradients sum over every chunk: the columns and the accumulator
  // are float32 so the sum is rounded once, at the end.
  constexpr bool narrow = sizeof(T) < sizeof(float);
  using ColT = std::conditional_t<narrow, float, T>;
  const at::TensorOptions col_opts = grad_output.options().dtype(narrow ? at::kFloat : grad_output.scalar_type());
  const int64_t K = p.col_rows(), all_rows = p.in_channels * p.kernel_plane();
  const int64_t cout_pg = p.out_per_group();
  const Chunking ch = plan_chunks(p, (all_rows + p.out_channels) * int64_t(sizeof(ColT)));
  const at::Tensor col_buf = at::empty({all_rows * ch.max_cols}, col_opts);
  const at::Tensor gcol_buf = at::empty({p.out_channels * ch.max_cols}, col_opts);
  at::Tensor acc = narrow ? at::empty({p.out_channels, K}, col_opts) : grad_weight.view({p.out_channels, K});
  acc.zero_();
  for_each_chunk(p, ch, [&](int64_t q0, int64_t cols) {
    const at::Tensor col = matrix(col_buf, all_rows, cols);
    const at::Tensor gcol = matrix(gcol_buf, p.out_channels, cols);
    C10_CUDA_CHECK((launch::im2col<T, ColT>(p, in_ptr<S>(input), reinterpret_cast<ColT*>(col.data_ptr()), q0, cols,
                                           stream)));
    C10_CUDA_CHECK((launch::gather_output_columns<T, ColT>(p, in_ptr<S>(grad_output),
                                                          reinterpret_cast<ColT*>(gcol.data_ptr()), q0, cols, stream)));
    for (int64_t g = 0; g < p.groups; ++g) {
      acc.narrow(0, g * cout_pg, cout_pg).addmm_(gcol.narrow(0, g * cout_pg, cout_pg), col.narrow(0, g * K, K).t());
    }
  });
  if constexpr (narrow) {
    C10_CUDA_CHECK(
        (launch::convert<float, T>(acc.const_data_ptr<float>(), out_ptr<S>(grad_weight), acc.numel(), stream)));
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// entry points (declared in csrc/conv2d.h)

// `channels_last`: the model's layout; CUDA tensors reach the backend NCHW whatever it is.
void conv2d_forward(ConvAlgo algo, const Conv2dParams& p, bool /*channels_last*/, const at::Tensor& input,
                    const at::Tensor& weight, const at::Tensor& bias, at::Tensor& output) {
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnnext_conv2d_forward_cuda", [&] {
    if (algo == ConvAlgo::Direct) {
      C10_CUDA_CHECK((launch::conv2d_direct_forward(p, in_ptr<scalar_t>(input), in_ptr<scalar_t>(weight),
                                                   in_ptr<scalar_t>(bias), out_ptr<scalar_t>(output), stream)));
    } else {
      forward_im2col<scalar_t>(p, input, weight, bias, output, stream);
    }
  });
}

void conv2d_grad_input(ConvAlgo algo, const Conv2dParams& p, bool /*channels_last*/, const at::Tensor& grad_output,
                       const at::Tensor& weight, at::Tensor& grad_input) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(), "cnnext_conv2d_grad_input_cuda", [&] {
        if (algo == ConvAlgo::Direct) {
          C10_CUDA_CHECK((launch::conv2d_direct_grad_input(p, in_ptr<scalar_t>(grad_output), in_ptr<scalar_t>(weight),
                                                          out_ptr<scalar_t>(grad_input), stream)));
        } else {
          grad_input_im2col<scalar_t>(p, grad_output, weight, grad_input, stream);
        }
      });
}

void conv2d_grad_weight(ConvAlgo algo, const Conv2dParams& p, bool /*channels_last*/, const at::Tensor& grad_output,
                        const at::Tensor& input, at::Tensor& grad_weight, at::Tensor& grad_bias) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(), "cnnext_conv2d_grad_weight_cuda", [&] {
        using T = dev_t<scalar_t>;
        if (algo == ConvAlgo::Direct) {
          const launch::GradWeightPlan plan = launch::conv2d_direct_grad_weight_plan<T>(p);
          at::Tensor workspace;
          launch::acc_t<T>* ws = nullptr;
          if (plan.workspace_elems > 0) {
            workspace = at::empty({plan.workspace_elems}, grad_output.options().dtype(acc_scalar_type<T>()));
            ws = reinterpret_cast<launch::acc_t<T>*>(workspace.data_ptr());
          }
          C10_CUDA_CHECK((launch::conv2d_direct_grad_weight<T>(p, plan, in_ptr<scalar_t>(grad_output),
                                                              in_ptr<scalar_t>(input), out_ptr<scalar_t>(grad_weight),
                                                              ws, stream)));
        } else {
          grad_weight_im2col<scalar_t>(p, grad_output, input, grad_weight, stream);
        }
      });
  // On the GPU the bias gradient stays a kernel of its own, launched on the same stream.
  if (grad_bias.defined()) conv2d_grad_bias(grad_output, grad_bias);
}

void conv2d_grad_bias(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const cudaStream_t stream = current_stream();
  const int64_t batch = grad_output.size(0), channels = grad_output.size(1);
  const int64_t plane = grad_output.size(2) * grad_output.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(), "cnnext_conv2d_grad_bias_cuda", [&] {
        C10_CUDA_CHECK((launch::conv2d_grad_bias(batch, channels, plane, in_ptr<scalar_t>(grad_output),
                                                out_ptr<scalar_t>(grad_bias), stream)));
      });
}

}  // namespace cuda
}  // namespace cnnext
