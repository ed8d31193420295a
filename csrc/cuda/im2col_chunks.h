// How the im2col algorithm walks a convolution's output positions in chunks:
// the plan shared by the torch layer (conv2d_cuda.cpp), which runs the
// chunks' kernels and GEMMs, and the emulation tests, which replay it.
// Torch-free, like launchers.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "../params.h"

namespace cnnext {
namespace cuda {

// Upper bound on the column buffers of one chunk (columns plus the GEMM's
// other operand). The seeds warn that a 32x3x228x228 batch with 100 filters
// needs ~634 MB of output alone; with whole-batch columns the buffer would be
// K = C_in*KH*KW times the input, so the batch is walked in chunks.
// CNNEXT_CUDA_IM2COL_WORKSPACE_BYTES overrides it (tests use a tiny value to
// exercise chunking).
inline int64_t workspace_budget() {
  constexpr int64_t kDefault = int64_t(64) << 20;
  if (const char* v = std::getenv("CNNEXT_CUDA_IM2COL_WORKSPACE_BYTES")) {
    char* end = nullptr;
    const long long parsed = std::strtoll(v, &end, 10);
    if (end != v && parsed > 0) return parsed;
  }
  return kDefault;
}

// Chunks are runs of whole images when at least one image fits in the
// budget (then col2im may overwrite, and GEMMs are as wide as possible);
// otherwise bands of output rows of one image (col2im then accumulates into
// a zeroed grad_input). A single output row larger than the budget is still
// one chunk: there is no smaller unit that keeps the GEMM a plain matrix.
struct Chunking {
  bool whole_images;
  int64_t images;  // per chunk, when whole_images
  int64_t rows;    // per chunk, otherwise
  int64_t max_cols;
};

inline Chunking plan_chunks(const Conv2dParams& p, int64_t bytes_per_col) {
  const int64_t plane = p.out_plane();
  const int64_t fit = std::max<int64_t>(1, workspace_budget() / std::max<int64_t>(1, bytes_per_col));
  Chunking c{};
  if (fit >= plane) {
    c.whole_images = true;
    c.images = std::max<int64_t>(1, std::min(p.batch, fit / plane));
    c.max_cols = c.images * plane;
  } else {
    c.whole_images = false;
    c.rows = std::max<int64_t>(1, std::min(p.out_h, fit / p.out_w));
    c.max_cols = c.rows * p.out_w;
  }
  return c;
}

// Calls f(q0, cols) for each chunk of flattened output positions.
template <typename F>
void for_each_chunk(const Conv2dParams& p, const Chunking& c, F&& f) {
  const int64_t plane = p.out_plane();
  if (c.whole_images) {
    for (int64_t n = 0; n < p.batch; n += c.images) f(n * plane, std::min(c.images, p.batch - n) * plane);
  } else {
    for (int64_t n = 0; n < p.batch; ++n) {
      for (int64_t oh = 0; oh < p.out_h; oh += c.rows) {
        f(n * plane + oh * p.out_w, std::min(c.rows, p.out_h - oh) * p.out_w);
      }
    }
  }
}

}  // namespace cuda
}  // namespace cnnext
