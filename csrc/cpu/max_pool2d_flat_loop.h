// The flat max-pool loop (max_pool2d_simd.h), written once against a small
// set of vector operations V (one struct per ISA and scalar type, see
// max_pool2d_avx2.cpp / max_pool2d_avx512.cpp). Included only by those files,
// after they switched the compiler to their ISA: everything here has
// internal linkage, so each ISA's copy stays in its own file (an inline
// function with external linkage would be one copy for the whole library,
// compiled for whichever ISA the linker happened to keep).
#pragma once

#include "max_pool2d_simd.h"

namespace cnnext {
namespace cpu {
namespace {

// Gathers are not followed by the hardware prefetchers (see
// max_pool2d_avx512.cpp): while pooling a plane, the next one is fetched
// in step with the outputs.
inline void prefetch_next_plane(const void* next_plane, int64_t plane_bytes, int64_t o, int64_t lanes, int64_t outputs) {
  const char* p = static_cast<const char*>(next_plane);
  const int64_t end = (o + lanes >= outputs) ? plane_bytes : (o + lanes) * plane_bytes / outputs;
  for (int64_t b = o * plane_bytes / outputs / 64 * 64; b < end; b += 64) __builtin_prefetch(p + b);
}

template <class V>
inline void max_pool2d_flat(const FlatPoolTables& t, const typename V::T* x, int64_t planes, typename V::T* y,
                            int64_t* idx) {
  for (int64_t plane = 0; plane < planes; ++plane) {
    const typename V::T* in = x + plane * t.in_plane;
    typename V::T* out = y + plane * t.out_plane;
    int64_t* arg_out = idx + plane * t.out_plane;
    for (int64_t o = 0; o < t.out_plane; o += V::kLanes) {
      prefetch_next_plane(in + t.in_plane, t.in_plane * int64_t(sizeof(*in)), o, V::kLanes, t.out_plane);
      typename V::Val best = V::lowest();
      typename V::Arg arg = V::to_arg(V::load_offsets(t.first + o));
      for (int64_t k = 0; k < t.taps; ++k) {
        const typename V::Off off = V::load_offsets(t.offsets + k * t.row + o);
        const typename V::Mask inside = V::inside(off);
        // Lanes outside the input read -inf rather than `best`, so the
        // gathers of successive taps do not wait for each other.
        const typename V::Val v = V::gather(inside, off, in);
        const typename V::Mask win = V::wins(inside, v, best);
        best = V::select(win, v, best);
        arg = V::select_arg(win, V::to_arg(off), arg);
      }
      const int64_t n = t.out_plane - o < V::kLanes ? t.out_plane - o : V::kLanes;
      V::store(out + o, arg_out + o, best, arg, n);
    }
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
