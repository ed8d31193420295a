// Average pooling (avg_pool2d and adaptive_avg_pool2d) on the CPU.
//
// Both ops are separable (params.h, AvgPoolAxis), and so are the kernels:
// forward sums the rows of each output row's window into one row of
// accumulators (elementwise adds over the full width, which vectorize),
// then sums that row over each output's columns; backward is the adjoint,
// a gather per input row: the scaled gradients of the output rows whose
// windows hold the row are summed, then spread over the columns in a fixed
// order. Every output and every input gradient is written by one thread in
// one fixed order (no atomics): results are deterministic. Planes are split
// across threads. float16/bfloat16 accumulate in float32; int64 (the one
// integer type PyTorch's CPU average pooling takes) as AvgMath<int64_t> says.
//
// The horizontal passes of avg_pool2d run one kernel tap at a time over the
// outputs whose tap lands inside the input (valid_outputs), with the stride
// known at compile time when it is 1 or 2, so they vectorize too; adaptive
// windows vary in width and take a plain loop per output. The global
// average (adaptive output 1 x 1) is a straight sum of each plane.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../avg_pool2d.h"
#include "kernel_utils.h"

namespace cnnext {
namespace cpu {
namespace {

// How windows of T are summed (in A) and averaged. Floating types sum in their
// opmath type and divide.
template <typename T>
struct AvgMath {
  using A = at::opmath_type<T>;
  static A divide(A sum, A divisor) { return sum / divisor; }
};

// int64 as PyTorch computes it: the sum wraps around on overflow (here in
// uint64_t, where that is defined rather than undefined behaviour, with the
// same bits), and the average is int64 division, truncating toward zero; the
// backward divides each output's gradient before summing (so it truncates per
// output). Divisors are never 0 (the op's checks), and -1 negates with wrap
// around, where INT64_MIN / -1 would trap.
template <>
struct AvgMath<int64_t> {
  using A = uint64_t;
  static A divide(A sum, A divisor) {
    const int64_t d = static_cast<int64_t>(divisor);
    return d == -1 ? A(0) - sum : static_cast<A>(static_cast<int64_t>(sum) / d);
  }
};

// dst[o] = sum of v over output o's window along `a` (v indexed by input position).
template <typename A, int64_t kStride>
CNNEXT_INLINE void window_sums(const AvgPoolAxis& a, const A* v, A* dst) {
  if (a.adaptive) {
    for (int64_t o = 0; o < a.out; ++o) {
      A sum = 0;
      for (int64_t i = a.start(o); i < a.end(o); ++i) sum += v[i];
      dst[o] = sum;
    }
    return;
  }
  const int64_t stride = kStride > 0 ? kStride : a.stride;
  std::fill(dst, dst + a.out, A(0));
  for (int64_t k = 0; k < a.kernel; ++k) {
    const TapRange r = valid_outputs(k, a.in, a.out, stride, a.pad, 1);
    const A* src = v + k - a.pad;
    for (int64_t o = r.lo; o < r.hi; ++o) dst[o] += src[o * stride];
  }
}

// The adjoint of window_sums: dst[i] = sum of g over the outputs whose window holds i.
template <typename A, int64_t kStride>
CNNEXT_INLINE void window_spread(const AvgPoolAxis& a, const A* g, A* dst) {
  if (a.adaptive) {
    for (int64_t i = 0; i < a.in; ++i) {
      A sum = 0;
      for (int64_t o = a.cover_lo(i); o < a.cover_hi(i); ++o) sum += g[o];
      dst[i] = sum;
    }
    return;
  }
  const int64_t stride = kStride > 0 ? kStride : a.stride;
  std::fill(dst, dst + a.in, A(0));
  for (int64_t k = 0; k < a.kernel; ++k) {
    const TapRange r = valid_outputs(k, a.in, a.out, stride, a.pad, 1);
    A* out = dst + k - a.pad;
    for (int64_t o = r.lo; o < r.hi; ++o) out[o * stride] += g[o];
  }
}

// Divisors of one output row, as A.
template <typename A>
void row_divisors(const AvgPool2dParams& p, int64_t oh, A* div) {
  for (int64_t ow = 0; ow < p.w.out; ++ow) div[ow] = static_cast<A>(p.divisor(oh, ow));
}

template <typename T, typename A, int64_t kStride>
CNNEXT_ISA_CLONES void forward_planes(const AvgPool2dParams& p, const T* x, int64_t planes, T* y) {
  std::vector<A> rows(p.w.in), sums(p.w.out), div(p.w.out * p.h.out);
  for (int64_t oh = 0; oh < p.h.out; ++oh) row_divisors(p, oh, div.data() + oh * p.w.out);
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T* in = x + plane * p.in_plane();
    T* out = y + plane * p.out_plane();
    for (int64_t oh = 0; oh < p.h.out; ++oh) {
      std::fill(rows.begin(), rows.end(), A(0));
      for (int64_t h = p.h.start(oh); h < p.h.end(oh); ++h) {
        const T* row = in + h * p.w.in;
        for (int64_t w = 0; w < p.w.in; ++w) rows[w] += static_cast<A>(row[w]);
      }
      window_sums<A, kStride>(p.w, rows.data(), sums.data());
      const A* d = div.data() + oh * p.w.out;
      for (int64_t ow = 0; ow < p.w.out; ++ow)
        out[oh * p.w.out + ow] = static_cast<T>(AvgMath<T>::divide(sums[ow], d[ow]));
    }
  }
}

template <typename T, typename A, int64_t kStride>
CNNEXT_ISA_CLONES void backward_planes(const AvgPool2dParams& p, const T* gy, int64_t planes, T* gx) {
  std::vector<A> scaled(p.out_plane()), rows(p.w.out), spread(p.w.in), div(p.out_plane());
  for (int64_t oh = 0; oh < p.h.out; ++oh) row_divisors(p, oh, div.data() + oh * p.w.out);
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T* g = gy + plane * p.out_plane();
    T* dst = gx + plane * p.in_plane();
    for (int64_t o = 0; o < p.out_plane(); ++o) scaled[o] = AvgMath<T>::divide(static_cast<A>(g[o]), div[o]);
    for (int64_t ih = 0; ih < p.h.in; ++ih) {
      std::fill(rows.begin(), rows.end(), A(0));
      for (int64_t oh = p.h.cover_lo(ih); oh < p.h.cover_hi(ih); ++oh) {
        const A* s = scaled.data() + oh * p.w.out;
        for (int64_t ow = 0; ow < p.w.out; ++ow) rows[ow] += s[ow];
      }
      window_spread<A, kStride>(p.w, rows.data(), spread.data());
      T* row = dst + ih * p.w.in;
      for (int64_t iw = 0; iw < p.w.in; ++iw) row[iw] = static_cast<T>(spread[iw]);
    }
  }
}

// Global average: each output is the mean of a whole plane, summed in four
// independent vector chains of A (one chain would be bound by the add latency).
template <typename T, typename A>
CNNEXT_ISA_CLONES void global_forward_planes(const T* x, int64_t plane_size, int64_t planes, T* y) {
  constexpr int64_t V = kVec<A>;
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T* in = x + plane * plane_size;
    Vec<A> acc[4] = {};
    int64_t i = 0;
    for (; i + 4 * V <= plane_size; i += 4 * V)
      for (int64_t u = 0; u < 4; ++u)
        for (int64_t l = 0; l < V; ++l) acc[u][l] += static_cast<A>(in[i + u * V + l]);
    const Vec<A> all = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    A sum = 0;
    for (int64_t l = 0; l < V; ++l) sum += all[l];
    for (; i < plane_size; ++i) sum += static_cast<A>(in[i]);
    y[plane] = static_cast<T>(AvgMath<T>::divide(sum, static_cast<A>(plane_size)));
  }
}

template <typename T, typename A>
void global_backward_planes(const T* gy, int64_t plane_size, int64_t planes, T* gx) {
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T v = static_cast<T>(AvgMath<T>::divide(static_cast<A>(gy[plane]), static_cast<A>(plane_size)));
    std::fill(gx + plane * plane_size, gx + (plane + 1) * plane_size, v);
  }
}

bool is_global(const AvgPool2dParams& p) { return p.h.adaptive && p.w.adaptive && p.h.out == 1 && p.w.out == 1; }

// Calls f(std::integral_constant<int64_t, S>) with S the horizontal stride if
// it is 1 or 2 (so the tap loops vectorize), else 0 (stride read at run time).
template <typename F>
void with_stride(const AvgPoolAxis& a, F&& f) {
  if (!a.adaptive && a.stride == 1) return f(std::integral_constant<int64_t, 1>{});
  if (!a.adaptive && a.stride == 2) return f(std::integral_constant<int64_t, 2>{});
  return f(std::integral_constant<int64_t, 0>{});
}

}  // namespace

void avg_pool2d_forward(const AvgPool2dParams& p, const at::Tensor& input, at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kLong, input.scalar_type(), "cnnext_avg_pool2d", [&] {
    using A = typename AvgMath<scalar_t>::A;
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    scalar_t* y = output.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, p.planes, 1, [&](int64_t begin, int64_t end) {
      const scalar_t* in = x + begin * p.in_plane();
      scalar_t* out = y + begin * p.out_plane();
      if (is_global(p)) return global_forward_planes<scalar_t, A>(in, p.in_plane(), end - begin, out);
      with_stride(p.w, [&](auto stride) {
        forward_planes<scalar_t, A, decltype(stride)::value>(p, in, end - begin, out);
      });
    });
  });
}

void avg_pool2d_backward(const AvgPool2dParams& p, const at::Tensor& grad_output, at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kLong, grad_output.scalar_type(),
                                  "cnnext_avg_pool2d_bwd", [&] {
    using A = typename AvgMath<scalar_t>::A;
    const scalar_t* gy = grad_output.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_input.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, p.planes, 1, [&](int64_t begin, int64_t end) {
      const scalar_t* g = gy + begin * p.out_plane();
      scalar_t* dst = gx + begin * p.in_plane();
      if (is_global(p)) return global_backward_planes<scalar_t, A>(g, p.in_plane(), end - begin, dst);
      with_stride(p.w, [&](auto stride) {
        backward_planes<scalar_t, A, decltype(stride)::value>(p, g, end - begin, dst);
      });
    });
  });
}

}  // namespace cpu
}  // namespace cnnext
