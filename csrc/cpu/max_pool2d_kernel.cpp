// Max pooling on the CPU, one output row at a time: for every kernel tap the
// row's outputs whose tap lands inside the input are updated in one
// branch-free pass (compare, then select value and tap), so the loop over
// output columns vectorizes and padding never reaches it. Planes are split
// across threads; backward scatters into the thread's own planes only.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <limits>
#include <vector>

#include "../max_pool2d.h"
#include "kernel_utils.h"

namespace cnnext {
namespace cpu {
namespace {

// First tap index k >= 0 with start + k*dilation >= 0, i.e. the first tap inside the input.
inline int64_t first_inside(int64_t start, int64_t dilation) {
  return start >= 0 ? 0 : (-start + dilation - 1) / dilation;
}

// Pools whole planes, one output row at a time. The inner loop tracks, per
// output, the best value and the number of the kernel tap that produced it
// (int32, as wide as a float lane, so value and tap vectorize together); flat
// indices come from the taps through a table once the row is done. kStride is
// the horizontal stride when it is 1 or 2 (known at compile time, so loads
// vectorize), 0 for any other stride.
template <typename T, typename acc_t, int64_t kStride>
CNNEXT_ISA_CLONES void pool_planes(const Pool2dParams& p, const T* x, int64_t planes, T* y, int64_t* idx) {
  const int64_t stride_w = kStride > 0 ? kStride : p.stride_w;
  std::vector<acc_t> best(p.out_w);
  std::vector<int32_t> tap(p.out_w);
  // Input offset of each tap relative to the window's corner.
  std::vector<int64_t> tap_offset(p.kernel_h * p.kernel_w);
  for (int64_t kh = 0; kh < p.kernel_h; ++kh)
    for (int64_t kw = 0; kw < p.kernel_w; ++kw)
      tap_offset[kh * p.kernel_w + kw] = kh * p.dilation_h * p.in_w + kw * p.dilation_w;
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T* in = x + plane * p.in_plane();
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const int64_t h0 = oh * p.stride_h - p.pad_h;
      const int64_t kh0 = first_inside(h0, p.dilation_h);
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        best[ow] = -std::numeric_limits<acc_t>::infinity();
        tap[ow] = -1;
      }
      for (int64_t kh = kh0; kh < p.kernel_h && h0 + kh * p.dilation_h < p.in_h; ++kh) {
        const T* row = in + (h0 + kh * p.dilation_h) * p.in_w;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const TapRange r = valid_outputs(kw, p.in_w, p.out_w, stride_w, p.pad_w, p.dilation_w);
          const T* src = row + kw * p.dilation_w - p.pad_w;
          const int32_t t = static_cast<int32_t>(kh * p.kernel_w + kw);
          for (int64_t ow = r.lo; ow < r.hi; ++ow) {
            const acc_t v = static_cast<acc_t>(src[ow * stride_w]);
            const bool take = (v > best[ow]) || (v != v);  // NaN wins, as in PyTorch
            best[ow] = take ? v : best[ow];
            tap[ow] = take ? t : tap[ow];
          }
        }
      }
      T* out = y + (plane * p.out_h + oh) * p.out_w;
      int64_t* arg = idx + (plane * p.out_h + oh) * p.out_w;
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const int64_t w0 = ow * stride_w - p.pad_w;
        out[ow] = static_cast<T>(best[ow]);
        // No tap taken (only -inf seen): PyTorch reports the window's first in-bounds element.
        arg[ow] = tap[ow] >= 0 ? h0 * p.in_w + w0 + tap_offset[tap[ow]]
                               : (h0 + kh0 * p.dilation_h) * p.in_w + w0 + first_inside(w0, p.dilation_w) * p.dilation_w;
      }
    }
  }
}

}  // namespace

void max_pool2d_forward(const Pool2dParams& p, const at::Tensor& input, at::Tensor& output, at::Tensor& indices) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnnext_max_pool2d", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    scalar_t* y = output.mutable_data_ptr<scalar_t>();
    int64_t* idx = indices.mutable_data_ptr<int64_t>();
    at::parallel_for(0, p.planes, 1, [&](int64_t begin, int64_t end) {
      const scalar_t* in = x + begin * p.in_plane();
      scalar_t* out = y + begin * p.out_plane();
      int64_t* arg = idx + begin * p.out_plane();
      switch (p.stride_w) {
        case 1:
          return pool_planes<scalar_t, acc_t, 1>(p, in, end - begin, out, arg);
        case 2:
          return pool_planes<scalar_t, acc_t, 2>(p, in, end - begin, out, arg);
        default:
          return pool_planes<scalar_t, acc_t, 0>(p, in, end - begin, out, arg);
      }
    });
  });
}

void max_pool2d_backward(const Pool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                         at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "cnnext_max_pool2d_bwd", [&] {
    const scalar_t* dy = grad_output.const_data_ptr<scalar_t>();
    const int64_t* idx = indices.const_data_ptr<int64_t>();
    scalar_t* dx = grad_input.mutable_data_ptr<scalar_t>();
    const int64_t in_plane = p.in_plane(), out_plane = p.out_plane();
    at::parallel_for(0, p.planes, 1, [&](int64_t begin, int64_t end) {
      std::fill(dx + begin * in_plane, dx + end * in_plane, scalar_t(0));
      for (int64_t plane = begin; plane < end; ++plane) {
        scalar_t* dst = dx + plane * in_plane;
        for (int64_t o = plane * out_plane; o < (plane + 1) * out_plane; ++o) {
          const int64_t i = idx[o];
          if (i >= 0 && i < in_plane) dst[i] += dy[o];
        }
      }
    });
  });
}

}  // namespace cpu
}  // namespace cnnext
