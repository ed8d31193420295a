// Pixel vectors along output rows, stored straight into the output: for
// layers with few multiply-adds per output (first layers: one or three input
// channels), stride 1, rows at least one vector wide. Each output row is
// covered by vectors starting at 0, V, 2V, ... and a last one that ends
// exactly at out_w (overlapping the one before it, whose lanes it
// recomputes), so every vector is stored whole; a row's last step computes
// only the vectors left, not a whole step's. pixel_vectors_flat.h wastes
// fewer lanes but passes every output through its scratch planes: when a
// step has few FMAs that extra store and load per output costs more than the
// lanes saved.
#pragma once

#include <algorithm>

#include "../vec.h"
#include "geometry.h"
#include "pixel_vectors_flat.h"

namespace cnnext {
namespace cpu {
namespace {

// kBlock vectors of output row oh, starting at columns start[u], all oc_block channels, stored
// straight into the first `valid` output planes.
template <typename T, class Arch, int64_t kBlock>
__attribute__((always_inline)) inline void row_step(const Correlation& c, const T* staged, const T* w, const T* bias,
                                                    int64_t valid, T* out, int64_t out_plane, int64_t oh,
                                                    const int64_t* start) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, kOcBlock = Arch::kTiles.oc_block;
  int64_t staged_start[kBlock];
  for (int64_t u = 0; u < kBlock; ++u) staged_start[u] = oh * c.staging.cols + start[u];
  Vec<T, B> acc[kOcBlock][kBlock] = {};
  correlate_vectors<T, Arch, kBlock>(c, staged, w, staged_start, acc);
  for (int64_t j = 0; j < kOcBlock; ++j) {  // constant trip count: acc stays in registers
    if (j >= valid) break;
    const T b = bias ? bias[j] : T(0);
    T* dst = out + j * out_plane + oh * c.out_w;
    for (int64_t u = 0; u < kBlock; ++u) store_vec<T, B>(dst + start[u], acc[j][u] + b);
  }
}

// Steps of pixel_vectors vectors along each row, then one step of the vectors left (the last ending at out_w).
template <typename T, class Arch>
void correlate_rows(const Correlation& c, const T* staged, const T* w, const T* bias, int64_t valid, T* out,
                    int64_t out_plane) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, kBlock = Arch::kTiles.pixel_vectors;
  const int64_t last = c.out_w - V;
  for (int64_t oh = 0; oh < c.out_h; ++oh) {
    int64_t ow = 0;
    for (; ow + kBlock * V <= c.out_w; ow += kBlock * V) {
      int64_t start[kBlock];
      for (int64_t u = 0; u < kBlock; ++u) start[u] = ow + u * V;
      row_step<T, Arch, kBlock>(c, staged, w, bias, valid, out, out_plane, oh, start);
    }
    if (ow == c.out_w) continue;
    with_vector_count<kBlock>((c.out_w - ow + V - 1) / V, [&](auto count) {
      constexpr int64_t kCount = decltype(count)::value;
      int64_t start[kCount];
      for (int64_t u = 0; u < kCount; ++u) start[u] = std::min(ow + u * V, last);
      row_step<T, Arch, kCount>(c, staged, w, bias, valid, out, out_plane, oh, start);
    });
  }
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
