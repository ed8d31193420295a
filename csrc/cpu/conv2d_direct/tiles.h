// Block sizes of the direct convolution kernels per architecture (as BLIS
// keeps its block sizes per architecture): how wide a vector register is and
// how many accumulators each kernel family holds, chosen so that a family's
// accumulators and operands fit the ISA's vector registers with none spilled.
// The kernels are templates over one of the architecture structs below; the
// plan (conv2d_plan.h) reads the same numbers at run time. Torch-free and
// ISA-neutral: the per-ISA translation units include it before their target
// pragma.
#pragma once

#include <cstdint>

#include "../isa.h"

namespace cnnext {
namespace cpu {

struct Tiles {
  // Bytes of one vector register.
  int64_t vec_bytes;
  // Pixel vectors (planes_first_layer.h, pixel_vectors_*.h): output channels
  // per step, each holding `pixel_vectors` vectors of output pixels.
  int64_t oc_block;
  int64_t pixel_vectors;
  // Channel vectors (channel_vectors.h, grad_weight_channel_vectors.h): at
  // most `cv_vectors` vectors of output channels per block, and per step
  // min(cv_max_pixels, cv_accumulators / vectors) pixels (grad_weight: taps).
  // The pointwise families (pointwise.h, grad_weight_pointwise.h) size their
  // steps from cv_accumulators too.
  int64_t cv_vectors;
  int64_t cv_accumulators;
  int64_t cv_max_pixels;

  int64_t lanes(int64_t element_size) const { return vec_bytes / element_size; }
};

namespace arch {

// 32 zmm registers: 8 channels x 2 vectors = 16 accumulators leave 16 for
// operands; channel vectors 4 x 6 = 24. grad_weight's columns step holds
// oc_block x 3 kernel columns (24).
struct Avx512 {
  static constexpr Tiles kTiles{64, 8, 2, 4, 24, 12};
};

// 16 ymm registers: 4 channels x 3 vectors = 12 accumulators, 3 input
// vectors and a broadcast weight; channel vectors 2 x 6 = 12, plus 2 weight
// vectors and a broadcast input. grad_weight's columns: 4 x 3 + 3 + 1.
struct Avx2 {
  static constexpr Tiles kTiles{32, 4, 3, 2, 12, 12};
};

// SSE2 on x86-64, NEON on aarch64: 16-byte vectors, the AVX2 tiles (16
// registers is what SSE2 has; NEON's 32 leave room to spare).
struct Portable {
  static constexpr Tiles kTiles{16, 4, 3, 2, 12, 12};
};

}  // namespace arch

// The tiles of the kernels compiled for `isa`.
inline Tiles tiles_for(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return arch::Avx512::kTiles;
    case Isa::kAvx2:
      return arch::Avx2::kTiles;
    case Isa::kBaseline:
      break;
  }
  return arch::Portable::kTiles;
}

}  // namespace cpu
}  // namespace cnnext
