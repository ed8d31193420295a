// Max pooling on the CPU. float and double take the "flat" path
// (max_pool2d_simd.h: a table-driven gather, AVX-512 or AVX2 chosen at run
// time) whenever the plane's tables fit in cache; everything else (half,
// bfloat16, the integer types, CPUs without AVX2, huge planes) pools one
// output row at a time (pool_loops.h, compiled per ISA):
// for every kernel tap the row's outputs whose tap lands inside the input are
// updated in one branch-free pass (compare, then select value and tap), so
// padding never reaches the inner loop. Planes are split across threads;
// backward scatters into the thread's own planes only. channels_last input
// pools in place, every window's taps a row of channels (pool_loops.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <limits>
#include <type_traits>
#include <vector>

#include "../max_pool2d.h"
#include "cache_budget.h"
#include "isa.h"
#include "kernel_utils.h"
#include "max_pool2d_simd.h"
#include "pool_loops.h"
#include "variants.h"

namespace cnnext {
namespace cpu {
namespace {

// The rows loop spends one vector step per row and column block however few
// lanes it fills; below this many outputs per row the flat loop's gathers
// cost less (lenet.pool2, 5 outputs per row: 0.40 ms flat vs 0.52 ms rows).
constexpr int64_t kRowsMinOutputWidth = 8;

// Owns the tables of FlatPoolTables for one plane geometry.
class FlatPoolGeometry {
 public:
  explicit FlatPoolGeometry(const Pool2dParams& p)
      : row_(round_up(p.out_plane(), kFlatPoolRowPad)),
        first_(row_, 0),
        offsets_(p.kernel_h * p.kernel_w * row_, -1) {
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const int64_t h0 = oh * p.stride_h - p.pad_h;
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const int64_t o = oh * p.out_w + ow;
        const int64_t w0 = ow * p.stride_w - p.pad_w;
        first_[o] = static_cast<int32_t>(window_first_index(p, h0, w0));
        for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
          const int64_t h = h0 + kh * p.dilation_h;
          for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
            const int64_t w = w0 + kw * p.dilation_w;
            if (h >= 0 && h < p.in_h && w >= 0 && w < p.in_w)
              offsets_[(kh * p.kernel_w + kw) * row_ + o] = static_cast<int32_t>(h * p.in_w + w);
          }
        }
      }
    }
    tables_ = {p.in_plane(), p.out_plane(), p.kernel_h * p.kernel_w, row_, first_.data(), offsets_.data()};
  }

  const FlatPoolTables& tables() const { return tables_; }

  static bool fits(const Pool2dParams& p) {
    // Divided, not multiplied: kernel_h * kernel_w alone may approach 2^62.
    const int64_t row_bytes = round_up(p.out_plane(), kFlatPoolRowPad) * int64_t(sizeof(int32_t));
    return p.kernel_h * p.kernel_w <= kPoolTableBytes / row_bytes;
  }

 private:
  int64_t row_;
  std::vector<int32_t> first_;
  std::vector<int32_t> offsets_;
  FlatPoolTables tables_{};
};

// Runs a SIMD loop (max_pool2d_simd.h) if this type, CPU and geometry allow
// one; false otherwise.
template <typename T>
bool max_pool2d_simd_forward(const Pool2dParams& p, const T* x, T* y, int64_t* idx) {
#ifdef CNNEXT_X86_SIMD
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    const Isa isa = active_isa();
    // Offsets live in int32 lanes, including PyTorch's index for a window with
    // nothing inside, which can point up to a row and a dilation past the plane.
    int64_t largest_offset = 0;
    const bool overflows = mul_overflows(p.in_h + p.dilation_h + 1, p.in_w, &largest_offset) ||
                           add_overflows(largest_offset, p.dilation_w, &largest_offset);
    if (isa == Isa::kBaseline || overflows || largest_offset > std::numeric_limits<int32_t>::max()) return false;
    const auto run = [&](const auto& pool_planes) {
      at::parallel_for(0, p.planes, 1, [&](int64_t begin, int64_t end) {
        pool_planes(x + begin * p.in_plane(), end - begin, y + begin * p.out_plane(), idx + begin * p.out_plane());
      });
    };
    if (isa == Isa::kAvx512 && is_pool_2x2(p)) {
      run([&](const T* in, int64_t planes, T* out, int64_t* arg) { max_pool2d_2x2_avx512(p, in, planes, out, arg); });
      return true;
    }
    if (isa == Isa::kAvx512 && fits_rows_loop(p) && p.out_w >= kRowsMinOutputWidth) {
      run([&](const T* in, int64_t planes, T* out, int64_t* arg) { max_pool2d_rows_avx512(p, in, planes, out, arg); });
      return true;
    }
    if (!FlatPoolGeometry::fits(p)) return false;
    const FlatPoolGeometry geometry(p);
    const FlatPoolTables& t = geometry.tables();
    run([&](const T* in, int64_t planes, T* out, int64_t* arg) {
      if (isa == Isa::kAvx512)
        max_pool2d_flat_avx512(t, in, planes, out, arg);
      else
        max_pool2d_flat_avx2(t, in, planes, out, arg);
    });
    return true;
  }
#endif
  return false;
}

// Whether max pooling of planes of `plane` elements runs in place on t:
// t is channels_last (and not also contiguous NCHW: C == 1 or 1 x 1 planes),
// and the planes' indices fit the kernel's int32 taps.
bool nhwc_pools(const at::Tensor& t, int64_t plane) {
  return !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast) &&
         plane <= std::numeric_limits<int32_t>::max();
}

}  // namespace

void max_pool2d_forward(const Pool2dParams& p, const at::Tensor& input, at::Tensor& output, at::Tensor& indices) {
  // Floating types and the integer ones PyTorch's CPU max pooling takes (int8 to int64, not bool).
  AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnnext_max_pool2d", [&] {
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    scalar_t* y = output.mutable_data_ptr<scalar_t>();
    int64_t* idx = indices.mutable_data_ptr<int64_t>();
    const auto& loops = pool_loops<scalar_t>(active_isa());
    if (nhwc_pools(input, p.in_plane())) {  // output rows (n, oh) split across threads
      return at::parallel_for(0, input.size(0) * p.out_h, 1, [&](int64_t begin, int64_t end) {
        loops.max_forward_nhwc(p, input.size(1), x, begin, end, y, idx);
      });
    }
    if (max_pool2d_simd_forward(p, x, y, idx)) return;
    at::parallel_for(0, p.planes, 1, [&](int64_t begin, int64_t end) {
      loops.max_forward(p, x + begin * p.in_plane(), end - begin, y + begin * p.out_plane(),
                        idx + begin * p.out_plane());
    });
  });
}

bool max_pool2d_backward(const Pool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                         at::Tensor& grad_input) {
  std::atomic<bool> all_inside{true};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "cnnext_max_pool2d_bwd", [&] {
    const scalar_t* dy = grad_output.const_data_ptr<scalar_t>();
    const int64_t* idx = indices.const_data_ptr<int64_t>();
    scalar_t* dx = grad_input.mutable_data_ptr<scalar_t>();
    const int64_t in_plane = p.in_plane(), out_plane = p.out_plane();
    if (nhwc_pools(grad_input, in_plane)) {  // each sample scatters into its own input pixels
      const int64_t channels = grad_output.size(1);
      at::parallel_for(0, grad_output.size(0), 1, [&](int64_t begin, int64_t end) {
        bool inside = true;
        for (int64_t n = begin; n < end; ++n) {
          scalar_t* dst = dx + n * in_plane * channels;
          std::fill(dst, dst + in_plane * channels, scalar_t(0));
          for (int64_t o = n * out_plane * channels; o < (n + 1) * out_plane * channels; o += channels) {
            for (int64_t c = 0; c < channels; ++c) {
              const int64_t i = idx[o + c];
              const bool ok = static_cast<uint64_t>(i) < static_cast<uint64_t>(in_plane);  // also rejects i < 0
              if (ok) dst[i * channels + c] += dy[o + c];
              inside &= ok;
            }
          }
        }
        if (!inside) all_inside.store(false, std::memory_order_relaxed);
      });
      return;
    }
    at::parallel_for(0, p.planes, 1, [&](int64_t begin, int64_t end) {
      // Noted in the scatter loop itself (one unsigned compare serves both), not in a pass of its own.
      bool inside = true;
      for (int64_t plane = begin; plane < end; ++plane) {
        scalar_t* dst = dx + plane * in_plane;
        // Zeroed right before its scatter, while the plane is in cache.
        std::fill(dst, dst + in_plane, scalar_t(0));
        for (int64_t o = plane * out_plane; o < (plane + 1) * out_plane; ++o) {
          const int64_t i = idx[o];
          const bool ok = static_cast<uint64_t>(i) < static_cast<uint64_t>(in_plane);  // also rejects i < 0
          if (ok) dst[i] += dy[o];
          inside &= ok;
        }
      }
      if (!inside) all_inside.store(false, std::memory_order_relaxed);
    });
  });
  return all_inside.load();
}

}  // namespace cpu
}  // namespace cnnext
