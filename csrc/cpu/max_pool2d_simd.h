// Max-pool forward loops written with x86 intrinsics, chosen at run time
// (isa.h). Two shapes of loop:
//  - rows (AVX-512, horizontal stride 1 or 2): the outputs of one row,
//    16 floats at a time; each kernel tap is one or two masked contiguous
//    loads (plus a permute that keeps every other element for stride 2), the
//    masks keep padding and the row's ends out.
//  - flat (AVX-512 and AVX2, any geometry): every output of a plane is
//    computed the same way, as a gather through a table of input offsets
//    built once per call, so the lanes run across output rows. Gathers are
//    slower than contiguous loads, so AVX-512 uses it only for strides > 2.
// Both keep PyTorch's semantics: the first maximum in scan order (kh, then
// kw) wins ties, NaN wins, and a window with nothing above -inf reports its
// first in-bounds element; indices are int64 offsets into the plane.
//
// Torch-free: the ISA-specific files (max_pool2d_avx2.cpp,
// max_pool2d_avx512.cpp) include this header; see there why that matters.
#pragma once

#include <cstdint>

#include "../params.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CNNEXT_X86_SIMD 1
#endif

namespace cnnext {
namespace cpu {

// Table rows are padded to a multiple of this (the widest vector, 16 float
// lanes), so the vector loop never reads past a row.
constexpr int64_t kFlatPoolRowPad = 16;

// The rows loops handle kernels up to this wide (per-column state lives in
// fixed arrays); wider ones take the flat loop.
constexpr int64_t kRowsMaxKernelW = 16;

// The geometry of one plane as offsets into it (row-major, h * W + w).
struct FlatPoolTables {
  int64_t in_plane;   // H * W
  int64_t out_plane;  // OH * OW
  int64_t taps;       // KH * KW, in scan order
  int64_t row;        // length of each table row, out_plane rounded up to kFlatPoolRowPad
  // [row]: the index PyTorch reports when no element beats -inf: the
  // window's first in-bounds row and column.
  const int32_t* first;
  // [taps][row]: the element tap k of output o reads, or -1 where the tap
  // falls outside the input (padding, a ceil_mode window's overhang) and in
  // the padding after out_plane.
  const int32_t* offsets;
};

// Whether the AVX-512 rows loops can pool `p`: they are compiled for a
// horizontal stride of 1 or 2 (see by_stride) and keep per-column state for
// kernels up to kRowsMaxKernelW wide. The one place that decides; the 2 x 2
// loop's geometry (is_pool_2x2) implies it.
inline bool fits_rows_loop(const Pool2dParams& p) {
  return (p.stride_w == 1 || p.stride_w == 2) && p.kernel_w <= kRowsMaxKernelW;
}

// Whether every window is 2 x 2 with the same stride, 1 or 2, both ways and
// lies inside the input (no padding or dilation, no ceil_mode overhang):
// max_pool2d_2x2_avx512's case.
inline bool is_pool_2x2(const Pool2dParams& p) {
  const int64_t s = p.stride_w;
  return p.kernel_h == 2 && p.kernel_w == 2 && (s == 1 || s == 2) && p.stride_h == s && p.pad_h == 0 &&
         p.pad_w == 0 && p.dilation_h == 1 && p.dilation_w == 1 && s * (p.out_h - 1) + 2 <= p.in_h &&
         s * (p.out_w - 1) + 2 <= p.in_w;
}

#ifdef CNNEXT_X86_SIMD
// Each pools `planes` consecutive planes of x into y and idx. Callers check
// the ISA first, and that every offset (also PyTorch's index for a window
// with nothing inside) fits in int32 lanes; the rows loops also need
// fits_rows_loop(p), the 2 x 2 loop is_pool_2x2(p).
void max_pool2d_2x2_avx512(const Pool2dParams& p, const float* x, int64_t planes, float* y, int64_t* idx);
void max_pool2d_2x2_avx512(const Pool2dParams& p, const double* x, int64_t planes, double* y, int64_t* idx);
void max_pool2d_rows_avx512(const Pool2dParams& p, const float* x, int64_t planes, float* y, int64_t* idx);
void max_pool2d_rows_avx512(const Pool2dParams& p, const double* x, int64_t planes, double* y, int64_t* idx);
void max_pool2d_flat_avx512(const FlatPoolTables& t, const float* x, int64_t planes, float* y, int64_t* idx);
void max_pool2d_flat_avx512(const FlatPoolTables& t, const double* x, int64_t planes, double* y, int64_t* idx);
void max_pool2d_flat_avx2(const FlatPoolTables& t, const float* x, int64_t planes, float* y, int64_t* idx);
void max_pool2d_flat_avx2(const FlatPoolTables& t, const double* x, int64_t planes, double* y, int64_t* idx);
#endif

}  // namespace cpu
}  // namespace cnnext
