// im2col + GEMM convolution on the CPU.
//
// For one sample and group, im2col lays every receptive field out as a
// column: col[(c, kh, kw)][(oh, ow)] = x[c][oh*sh - pt + kh*dh][ow*sw - pl + kw*dw]
// (zero outside the input). The convolution is then the GEMM
//   y (C_out/g x OH*OW) = W (C_out/g x K) * col (K x OH*OW),
// and its gradients are two more GEMMs, dcol = W^T * dy (scattered back by
// col2im) and dW += dy * col^T. Small planes give GEMMs too thin to run fast
// (lenet.conv3: 9 output pixels), so the columns of several samples sit side
// by side in one buffer, (K, S * OH*OW), and each GEMM covers S samples; y
// and dy then pass through a (C_out/g, S * OH*OW) buffer, since NCHW keeps a
// sample's channels together. Blocks of S samples are spread over threads;
// each thread owns one column buffer of bounded size, whatever the batch, and
// the GEMMs run single-threaded inside the parallel region. S and the chunks
// of grad_weight's batch reduction follow from the shape alone (BatchChunks),
// so the results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include "cache_budget.h"
#include "conv2d_kernels.h"
#include "im2col.h"
#include "kernel_utils.h"

namespace cnnext {
namespace cpu {
namespace {

// oneMKL's setter of the calling thread's thread count (C interface; mkl_service.h names it
// mkl_set_num_threads_local), where ATen's GEMM is oneMKL (PyTorch's x86 builds); null elsewhere:
// a weak reference, so the extension loads against any BLAS.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

// Runs oneMKL single-threaded in the calling thread while it lives. A threaded oneMKL GEMM
// splits its reduction into as many parts as it may use threads, even inside a parallel region
// where one thread runs them all, so its rounding would follow torch.set_num_threads.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : previous_(MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0) {}
  ~SingleThreadedBlas() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int previous_;
};

// at::parallel_for over [0, n) whose workers see the caller's thread-local state (in particular
// that autograd is off), since they call ATen's GEMM, single-threaded: the parallelism is over
// the tasks, which follow from the shape alone.
template <typename Fn>
void parallel_gemms(int64_t n, const Fn& fn) {
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    at::ThreadLocalStateGuard guard(caller_state);
    const SingleThreadedBlas single_threaded;
    fn(begin, end);
  });
}

// GEMMs narrower than this many columns run far below the BLAS's speed.
constexpr int64_t kMinGemmColumns = 256;
// Samples per GEMM: enough for kMinGemmColumns output columns, within the
// column buffer budget, at most `limit`.
int64_t samples_per_gemm(const Conv2dParams& p, int64_t element_size, int64_t limit) {
  const int64_t wanted = (kMinGemmColumns + p.out_plane() - 1) / p.out_plane();
  const int64_t fit = kColumnChunkBytes / std::max<int64_t>(1, p.col_rows() * p.out_plane() * element_size);
  return std::max<int64_t>(1, std::min({wanted, fit, limit}));
}

// The (C_out/g, K) weight matrix of group g.
at::Tensor weight_matrix(const Conv2dParams& p, const at::Tensor& weight, int64_t g) {
  return weight.view({p.groups, p.out_per_group(), p.col_rows()}).select(0, g);
}

// Samples [n, n + count), group g, of an NCHW tensor: (count, channels/g, H, W).
at::Tensor group_slice(const at::Tensor& t, int64_t groups, int64_t n, int64_t count, int64_t g) {
  const int64_t per_group = t.size(1) / groups;
  return t.narrow(0, n, count).narrow(1, g * per_group, per_group);
}

// The GEMM operand for samples [n, n + count), group g of an NCHW tensor t,
// as (channels/g, count * H*W). For one sample that is a view of t; for more
// it is `buffer` (holding at least that much), filled from t if `fill`.
at::Tensor gemm_operand(const at::Tensor& t, int64_t groups, int64_t n, int64_t count, int64_t g,
                        at::Tensor& buffer, bool fill) {
  const at::Tensor slice = group_slice(t, groups, n, count, g);
  const int64_t per_group = slice.size(1), plane = t.size(2) * t.size(3);
  if (count == 1) return slice.view({per_group, plane});
  at::Tensor m = buffer.narrow(1, 0, count * plane);
  if (fill) m.view({per_group, count, t.size(2), t.size(3)}).copy_(slice.transpose(0, 1));
  return m;
}

// Writes a (channels/g, count * H*W) GEMM result back into samples
// [n, n + count), group g of t, unless it already is a view of t.
void scatter_operand(const at::Tensor& m, at::Tensor& t, int64_t groups, int64_t n, int64_t count, int64_t g) {
  if (count == 1) return;
  at::Tensor slice = group_slice(t, groups, n, count, g);
  slice.transpose(0, 1).copy_(m.view({slice.size(1), count, t.size(2), t.size(3)}));
}

// The columns of samples [n, n + count), group g, as (K, count * L): for a
// pointwise convolution (params.h) the input slice itself, (C_in/g, H*W), a
// view for one sample, else copied side by side into `col`; otherwise built
// in `col` by im2col.
template <typename T>
at::Tensor columns(const Conv2dParams& p, const at::Tensor& input, int64_t n, int64_t count, int64_t g,
                   at::Tensor& col) {
  if (is_pointwise(p)) return gemm_operand(input, p.groups, n, count, g, col, /*fill=*/true);
  const int64_t L = p.out_plane(), ld = col.size(1);
  const at::Tensor x = group_slice(input, p.groups, n, count, g);
  for (int64_t s = 0; s < count; ++s)
    im2col(p, x.select(0, s).const_data_ptr<T>(), col.mutable_data_ptr<T>() + s * L, ld);
  return col.narrow(1, 0, count * L);
}

// Pointwise convolutions in channels_last: the input is a (N*H*W, C_in)
// matrix, the output a (N*H*W, C_out) one, and each pass one GEMM over the
// pixels with no transposes. The pixels are cut into blocks fixed by the
// shape (grad_weight: its BatchChunks) and each block's GEMM runs
// single-threaded, so that the results do not depend on the thread count.
constexpr int64_t kPixelBlock = 2048;

// The (N*H*W, C) view of a channels_last-contiguous tensor.
at::Tensor pixel_matrix(const at::Tensor& t) { return t.permute({0, 2, 3, 1}).view({-1, t.size(1)}); }

}  // namespace

bool pointwise_nhwc(const Conv2dParams& p, const at::Tensor& a, const at::Tensor& b) {
  return is_pointwise(p) && p.groups == 1 && a.is_contiguous(at::MemoryFormat::ChannelsLast) &&
         b.is_contiguous(at::MemoryFormat::ChannelsLast);
}

void pointwise_nhwc_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, at::Tensor& output) {
  const at::Tensor x = pixel_matrix(input), wt = weight.view({p.out_channels, p.in_channels}).t();
  at::Tensor y = pixel_matrix(output);  // a view: output is channels_last
  const int64_t pixels = x.size(0);
  parallel_gemms((pixels + kPixelBlock - 1) / kPixelBlock, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t first = block * kPixelBlock, count = std::min(kPixelBlock, pixels - first);
      at::Tensor out = y.narrow(0, first, count);
      if (bias.defined()) {
        at::addmm_out(out, bias.unsqueeze(0), x.narrow(0, first, count), wt);
      } else {
        at::mm_out(out, x.narrow(0, first, count), wt);
      }
    }
  });
}

void pointwise_nhwc_grad_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                               at::Tensor& grad_input) {
  const at::Tensor dy = pixel_matrix(grad_output), w = weight.view({p.out_channels, p.in_channels});
  at::Tensor dx = pixel_matrix(grad_input);
  const int64_t pixels = dy.size(0);
  parallel_gemms((pixels + kPixelBlock - 1) / kPixelBlock, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t first = block * kPixelBlock, count = std::min(kPixelBlock, pixels - first);
      at::Tensor out = dx.narrow(0, first, count);
      at::mm_out(out, dy.narrow(0, first, count), w);
    }
  });
}

void pointwise_nhwc_grad_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                                at::Tensor& grad_weight, at::Tensor& grad_bias) {
  const at::Tensor dy = pixel_matrix(grad_output), x = pixel_matrix(input);
  const BatchChunks chunking(p.batch);
  const int64_t chunks = chunking.count, plane = p.out_plane();
  at::Tensor partials = at::empty({chunks, p.out_channels, p.in_channels}, grad_output.options());
  at::Tensor bias_partials = at::empty({chunks, p.out_channels}, grad_output.options());
  parallel_gemms(chunks, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t first = chunking.begin(chunk) * plane, count = chunking.begin(chunk + 1) * plane - first;
      const at::Tensor gy = dy.narrow(0, first, count);
      at::Tensor dw = partials.select(0, chunk);
      at::mm_out(dw, gy.t(), x.narrow(0, first, count));
      if (grad_bias.defined()) {
        at::Tensor db = bias_partials.select(0, chunk);
        at::sum_out(db, gy, 0);
      }
    }
  });
  at::Tensor flat = grad_weight.view({1, -1});
  at::sum_out(flat, partials.view({chunks, -1}), 0, /*keepdim=*/true);
  if (grad_bias.defined()) {
    at::Tensor db = grad_bias.view({1, -1});
    at::sum_out(db, bias_partials, 0, /*keepdim=*/true);
  }
}

void im2col_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    at::Tensor& output) {
  const int64_t S = samples_per_gemm(p, input.element_size(), BatchChunks(p.batch).max_size());
  const int64_t L = p.out_plane();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cnnext_im2col_forward", [&] {
    parallel_gemms((p.batch + S - 1) / S, [&](int64_t begin, int64_t end) {
      at::Tensor col = at::empty({p.col_rows(), S * L}, input.options());
      at::Tensor y_buffer = at::empty({p.out_per_group(), S * L}, input.options());
      for (int64_t block = begin; block < end; ++block) {
        const int64_t n = block * S, count = std::min(S, p.batch - n);
        for (int64_t g = 0; g < p.groups; ++g) {
          const at::Tensor cols = columns<scalar_t>(p, input, n, count, g, col);
          at::Tensor y = gemm_operand(output, p.groups, n, count, g, y_buffer, /*fill=*/false);
          if (bias.defined()) {
            at::addmm_out(y, bias.narrow(0, g * p.out_per_group(), p.out_per_group()).unsqueeze(1),
                          weight_matrix(p, weight, g), cols);
          } else {
            at::mm_out(y, weight_matrix(p, weight, g), cols);
          }
          scatter_operand(y, output, p.groups, n, count, g);
        }
      }
    });
  });
}

void im2col_grad_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                       at::Tensor& grad_input) {
  const int64_t S = samples_per_gemm(p, grad_output.element_size(), BatchChunks(p.batch).max_size());
  const int64_t L = p.out_plane();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_im2col_grad_input", [&] {
    parallel_gemms((p.batch + S - 1) / S, [&](int64_t begin, int64_t end) {
      at::Tensor col = at::empty({p.col_rows(), S * L}, grad_output.options());
      at::Tensor dy_buffer = at::empty({p.out_per_group(), S * L}, grad_output.options());
      for (int64_t block = begin; block < end; ++block) {
        const int64_t n = block * S, count = std::min(S, p.batch - n);
        for (int64_t g = 0; g < p.groups; ++g) {
          const at::Tensor dy = gemm_operand(grad_output, p.groups, n, count, g, dy_buffer, /*fill=*/true);
          if (is_pointwise(p)) {  // the column gradient is the input gradient: no col2im
            at::Tensor dx = gemm_operand(grad_input, p.groups, n, count, g, col, /*fill=*/false);
            at::mm_out(dx, weight_matrix(p, weight, g).t(), dy);
            scatter_operand(dx, grad_input, p.groups, n, count, g);
            continue;
          }
          at::Tensor dcol = col.narrow(1, 0, count * L);
          at::mm_out(dcol, weight_matrix(p, weight, g).t(), dy);
          at::Tensor dx = group_slice(grad_input, p.groups, n, count, g);
          for (int64_t s = 0; s < count; ++s)
            col2im(p, dcol.const_data_ptr<scalar_t>() + s * L, dcol.stride(0),
                   dx.select(0, s).mutable_data_ptr<scalar_t>());
        }
      }
    });
  });
}

void im2col_grad_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                        at::Tensor& grad_weight) {
  // Each chunk of the batch has its own partial dW; the partials are summed in chunk order.
  const BatchChunks chunking(p.batch);
  const int64_t chunks = chunking.count;
  const int64_t S = samples_per_gemm(p, input.element_size(), chunking.max_size());
  const int64_t L = p.out_plane();
  at::Tensor partials = at::zeros({chunks, p.groups, p.out_per_group(), p.col_rows()}, grad_output.options());
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cnnext_im2col_grad_weight", [&] {
    parallel_gemms(chunks, [&](int64_t chunk_begin, int64_t chunk_end) {
      at::Tensor col = at::empty({p.col_rows(), S * L}, input.options());
      at::Tensor dy_buffer = at::empty({p.out_per_group(), S * L}, grad_output.options());
      for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
        const int64_t last = chunking.begin(chunk + 1);
        for (int64_t n = chunking.begin(chunk); n < last; n += S) {
          const int64_t count = std::min(S, last - n);
          for (int64_t g = 0; g < p.groups; ++g) {
            const at::Tensor cols = columns<scalar_t>(p, input, n, count, g, col);
            const at::Tensor dy = gemm_operand(grad_output, p.groups, n, count, g, dy_buffer, /*fill=*/true);
            partials.select(0, chunk).select(0, g).addmm_(dy, cols.t());
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
