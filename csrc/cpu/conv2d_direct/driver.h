// The direct convolution's passes (forward, grad_input, grad_weight) over a
// batch, templated on the element type and on the architecture whose tiles
// the kernels use (tiles.h). They run the kernel family the plan
// (conv2d_plan.h) chose; nothing here decides a family.
//
// Borders never reach the kernels' inner loops: each sample's planes are
// first staged into a zero-padded copy (kernel_utils.h, Staging). grad_weight
// reduces over the batch in per-chunk partial sums (BatchChunks).
//
// Included by the per-ISA translation units only (conv2d_direct_*.cpp),
// after their target pragma: everything here has internal linkage.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <memory>
#include <type_traits>
#include <vector>

#include "../cache_budget.h"
#include "../conv2d_plan.h"
#include "../kernel_utils.h"
#include "../variants.h"
#include "../vec.h"
#include "channel_vectors.h"
#include "channel_vectors_scatter.h"
#include "depthwise.h"
#include "depthwise_nhwc.h"
#include "geometry.h"
#include "grad_weight_channel_vectors.h"
#include "grad_weight_columns.h"
#include "grad_weight_input_vectors.h"
#include "grad_weight_pointwise.h"
#include "pack.h"
#include "pixel_vectors_block.h"
#include "pixel_vectors_flat.h"
#include "planes_first_layer.h"
#include "pointwise.h"

namespace cnnext {
namespace cpu {
namespace {

// stage_pixels's pixel-major staging from NCHW planes: each source row's pixels transposed into rows
// of channels (a gathered or spread-out staging, pixel by pixel).
template <typename T, int64_t B>
void stage_planes_as_pixels(const T* src, int64_t channels, int64_t src_h, int64_t src_w, const Staging& s, T* dst) {
  int64_t y_lo, y_hi, x_lo, x_hi;
  staged_source_range(src_h, s.off_y, s.up_y, s.rows, y_lo, y_hi);
  staged_source_range(src_w, s.off_x, s.up_x, s.cols, x_lo, x_hi);
  zero_unstaged(dst, channels, s, y_lo, y_hi, x_lo, x_hi);
  const int64_t plane = src_h * src_w;
  const auto copy_pixel = [&](int64_t sy, int64_t sx, int64_t y, int64_t x) {
    T* out = dst + (y * s.cols + x) * channels;
    for (int64_t ch = 0; ch < channels; ++ch) out[ch] = src[ch * plane + sy * src_w + sx];
  };
  if (s.gather_y.taps != 0 || s.gather_x.taps != 0) return for_each_gathered_pixel(s, src_h, src_w, copy_pixel);
  for (int64_t sy = y_lo; sy < y_hi; ++sy) {
    const int64_t y = sy * s.up_y + s.off_y;
    if (s.up_x == 1) {
      transpose_rows<T, B>(src + sy * src_w + x_lo, plane, channels, x_hi - x_lo,
                           dst + (y * s.cols + x_lo + s.off_x) * channels, channels);
      continue;
    }
    for (int64_t sx = x_lo; sx < x_hi; ++sx) copy_pixel(sy, sx, y, sx * s.up_x + s.off_x);
  }
}

// A sample's group of input channels into the staging of the channel-vector families: pixel-major
// (`pixel_major`) from channels_last pixels (stage_pixels copies them whole) or NCHW planes
// (transposed), else as planes.
template <typename T, int64_t B>
void stage_channel_vector_input(const T* src, int64_t channels, int64_t src_h, int64_t src_w, const Staging& s,
                                T* dst, int64_t pixel_stride, bool pixel_major) {
  if (!pixel_major) return stage_planes(src, channels, src_h, src_w, s, dst, pixel_stride);
  if (pixel_stride == 1) return stage_planes_as_pixels<T, B>(src, channels, src_h, src_w, s, dst);
  stage_pixels(src, channels, src_h, src_w, s, dst, pixel_stride);
}

// One block of the pixel-vector families: oc_block output channels (the first `valid` real).
template <typename T, class Arch>
void correlate(Family family, const Correlation& c, const T* staged, const T* w, const T* bias, int64_t valid, T* out,
               int64_t out_plane, T* scratch) {
  switch (family) {
    case Family::kPixelVectorsFlat:
      return correlate_flat<T, Arch>(c, staged, w, bias, valid, out, out_plane, scratch);
    default:
      if (c.stride_w == 1) return correlate_block<T, Arch, true>(c, staged, w, bias, valid, out, out_plane);
      return correlate_block<T, Arch, false>(c, staged, w, bias, valid, out, out_plane);
  }
}

// Runs a pixel-vector family for every (sample, group, block of oc_block
// outputs), staging each sample's group planes once per thread.
template <typename T, class Arch>
void correlate_batch(Family family, const Correlation& c, int64_t batch, int64_t groups, int64_t outs, const T* src,
                     int64_t src_h, int64_t src_w, const std::vector<T>& packed, const T* bias, T* dst) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, kOcBlock = Arch::kTiles.oc_block;
  const int64_t blocks = (outs + kOcBlock - 1) / kOcBlock;
  const int64_t block_weights = c.taps() * kOcBlock;
  const int64_t out_plane = c.out_h * c.out_w;
  at::parallel_for(0, batch * groups * blocks, 1, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> staged(staged_size(c, V));
    AlignedBuffer<T> scratch(family == Family::kPixelVectorsFlat ? flat_scratch_size<T, Arch>(c) : 0);
    int64_t staged_plane_set = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t set = task / blocks;  // = n * groups + g
      const int64_t block = task % blocks;
      if (set != staged_plane_set) {
        stage_planes(src + set * c.channels * src_h * src_w, c.channels, src_h, src_w, c.staging, staged.data());
        staged_plane_set = set;
      }
      const int64_t g = set % groups;
      const int64_t oc0 = block * kOcBlock;
      const int64_t valid = std::min(kOcBlock, outs - oc0);
      correlate<T, Arch>(family, c, staged.data(), packed.data() + (g * blocks + block) * block_weights,
                         bias ? bias + g * outs + oc0 : nullptr, valid, dst + (set * outs + oc0) * out_plane,
                         out_plane, scratch.data());
    }
  });
}

// The planes family (planes_first_layer.h) for every (sample, group, band of rows, block of oc_block
// outputs): each thread stages a sample's group planes once, and shifts a band's rows once for all
// the blocks it runs on them.
template <typename T, class Arch>
void plane_batch(const Correlation& c, int64_t batch, int64_t groups, int64_t outs, const T* src, int64_t src_h,
                 int64_t src_w, const std::vector<T>& packed, const T* bias, T* dst) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, kOcBlock = Arch::kTiles.oc_block;
  const int64_t blocks = (outs + kOcBlock - 1) / kOcBlock;
  const ShiftedBands bands = shifted_bands(c, V, sizeof(T));
  const std::vector<int64_t> tap = shifted_tap_offsets(c, bands);
  const int64_t block_weights = c.taps() * kOcBlock;
  const int64_t out_plane = c.out_h * c.out_w;
  at::parallel_for(0, batch * groups * bands.count * blocks, 1, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> staged(staged_size(c, V));
    AlignedBuffer<T> shifted(bands.size());
    int64_t staged_set = -1, shifted_band = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t key = task / blocks;  // = (n * groups + g) * bands + band
      const int64_t set = key / bands.count, band = key % bands.count, block = task % blocks;
      const int64_t row0 = bands.first_row(band), rows = bands.band_rows(band, c.out_h);
      if (set != staged_set) {
        stage_planes(src + set * c.channels * src_h * src_w, c.channels, src_h, src_w, c.staging, staged.data());
        staged_set = set;
        shifted_band = -1;
      }
      if (band != shifted_band) {
        shift_columns<T, Arch>(c, staged.data(), row0, rows, bands, shifted.data());
        shifted_band = band;
      }
      const int64_t g = set % groups, oc0 = block * kOcBlock;
      const ShiftedBand<T> operands{shifted.data(), tap.data(), c.taps(), rows * c.out_w};
      correlate_planes<T, Arch>(operands, packed.data() + (g * blocks + block) * block_weights,
                                bias ? bias + g * outs + oc0 : nullptr, std::min(kOcBlock, outs - oc0),
                                dst + (set * outs + oc0) * out_plane + row0 * c.out_w, out_plane);
    }
  });
}

// The channel-vector family for every (samples, group, block of cv_vectors vectors of outputs),
// blocked as channel_vector_blocking says, on NCHW or channels_last activations (`channels_last`:
// both src and dst), the input staged pixel-major or as planes (`pixel_major`:
// pixel_major_staging). `classes`: the pixels run class by class and skip their border taps
// (skips_border; the weights packed kernel-major), else in raster order over every tap. Each sum
// runs over its taps in order whatever the blocking: the result does not depend on it, nor on
// the thread count.
template <typename T, class Arch>
void channel_vector_batch(const Correlation& c, int64_t batch, int64_t groups, int64_t outs, const T* src,
                          int64_t src_h, int64_t src_w, const T* packed, const T* bias, T* dst,
                          bool channels_last, bool pixel_major, const WindowClasses* classes) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>;
  constexpr int64_t block_outs = cv_block_channels<T, Arch>();
  const int64_t blocks = (outs + block_outs - 1) / block_outs;
  const int64_t taps = c.taps(), pixels = c.out_h * c.out_w;
  const ChannelVectorBlocking blocking = channel_vector_blocking<T, Arch>(c, batch, groups, outs, channels_last,
                                                                          classes != nullptr, at::get_num_threads());
  const int64_t samples = blocking.samples, parts = blocking.parts(taps);
  const int64_t staged_sample = staged_size(c, V);
  const Activations from{groups, c.channels, src_h * src_w, channels_last}, to{groups, outs, pixels, channels_last};
  // channels_last pointwise layers read their source in place, a pixel's channels side by side: one
  // stream of reads, where staged planes would read one per channel, too many for the prefetchers.
  const bool in_place = channels_last && reads_source_as_is(c, src_h, src_w);
  // The window offsets of a run of `samples` staged samples (PixelRun); in place, a run's samples follow
  // each other pixel after pixel. Staged pixel-major (the plan's pixel_major: channels_last sources,
  // NCHW ones on small planes), else as planes.
  const WindowOffsets offsets = in_place        ? WindowOffsets(pixels, c.channels, from.pixel_stride())
                                : pixel_major   ? WindowOffsets::of_pixels(c)
                                                : WindowOffsets(c, classes != nullptr);
  std::vector<int64_t> run_base(classes ? 0 : samples * pixels);
  for (int64_t q = 0; q < static_cast<int64_t>(run_base.size()); ++q)
    run_base[q] = in_place ? q * from.pixel_stride() : q / pixels * staged_sample + offsets.base[q % pixels];
  // NCHW sums in rows of channels first: the class runs' in raster order, transposed once complete
  // (plus the rows store_transposed's whole squares read past a sample's end).
  const int64_t scratch_rows = channels_last ? 0 : classes ? samples * pixels + V : parts == 1 ? 0 : samples * pixels;
  const std::vector<T> zeros(block_outs, T(0));  // the sums' start without a bias
  at::parallel_for(0, blocking.sets * groups * blocks, 1, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> staged(in_place ? 0 : samples * staged_sample);
    AlignedBuffer<T> tile(channels_last || classes ? 0 : channel_vector_tile_size<T, Arch>());
    AlignedBuffer<T> partial(scratch_rows * block_outs);
    ClassRun class_run{classes, {}, {}, {}};
    std::vector<T*> planes(samples);
    int64_t staged_key = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t key = task / blocks;  // = sample set * groups + g
      const int64_t g = key % groups, set = key / groups;
      const int64_t n0 = blocking.first(set, batch), count = blocking.first(set + 1, batch) - n0;
      const int64_t oc0 = task % blocks * block_outs;
      if (key != staged_key && !in_place) {
        for (int64_t s = 0; s < count; ++s)
          stage_channel_vector_input<T, Arch::kTiles.vec_bytes>(src + from.offset((n0 + s) * groups + g, 0),
                                                                c.channels, src_h, src_w, c.staging,
                                                                staged.data() + s * staged_sample,
                                                                from.pixel_stride(), pixel_major);
        staged_key = key;
      }
      const T* source = in_place ? src + from.offset(n0 * groups + g, 0) : staged.data();
      if (classes) class_run.build(count, staged_sample, offsets, pixels);
      const PixelRun run{run_base.data(), pixels, count};
      const TapSpan<T> all{offsets.tap.data(), packed + (g * outs + oc0) * taps,
                           std::min(block_outs, outs - oc0), taps};
      const T* block_bias = bias ? bias + g * outs + oc0 : nullptr;
      const StartSums<T> bias_row{block_bias ? block_bias : zeros.data(), 0};
      // channels_last: the run's samples are one run of rows of the output.
      T* rows = dst + to.offset(n0 * groups + g, oc0);
      for (int64_t s = 0; s < count; ++s) planes[s] = dst + to.offset((n0 + s) * groups + g, oc0);
      with_vector_count<Arch::kTiles.cv_vectors>((outs - oc0) / V, [&](auto vectors) {
        constexpr int64_t kCoVecs = decltype(vectors)::value, row = kCoVecs * V;
        for (int64_t t0 = 0; t0 < std::max<int64_t>(taps, 1); t0 += blocking.part_taps) {
          const TapSpan<T> part = all.part(t0, std::min(blocking.part_taps, taps - t0));
          const bool first = t0 == 0, last = t0 + part.count >= taps;
          if (classes) {
            const SumRows<T> sums = channels_last ? SumRows<T>{rows, nullptr, to.pixel_stride(), block_bias, false}
                                                  : SumRows<T>{partial.data(), nullptr, row, block_bias, false};
            channel_vector_classes<T, Arch, kCoVecs>(source, class_run, c, all, t0, t0 + part.count, sums);
            if (last && !channels_last)
              for (int64_t s = 0; s < count; ++s)
                store_transposed<T, Arch::kTiles.vec_bytes>(partial.data() + s * pixels * row, row, pixels, row,
                                                            planes[s], pixels);
          } else if (channels_last) {
            const int64_t stride = to.pixel_stride();
            channel_vector_rows<T, Arch, kCoVecs>(source, run, part,
                                                  first ? bias_row : StartSums<T>{rows, stride}, rows, stride);
          } else if (last) {
            channel_vector_planes<T, Arch, kCoVecs>(source, run, part,
                                                    first ? bias_row : StartSums<T>{partial.data(), row},
                                                    planes.data(), tile.data());
          } else {
            channel_vector_rows<T, Arch, kCoVecs>(source, run, part,
                                                  first ? bias_row : StartSums<T>{partial.data(), row},
                                                  partial.data(), row);
          }
        }
      });
    }
  });
}

// Every (sample, group) of dst = the correlation of src with the weights `w`
// shows (pack.h), with the plan's family, on the plan's layout: forward and
// grad_input both run this.
template <typename T, class Arch>
void correlate_all(ConvPass pass, const ConvPlan& plan, const Correlation& c, int64_t batch, int64_t groups,
                   int64_t outs, const T* src, int64_t src_h, int64_t src_w, const WeightView<T>& w, const T* bias,
                   T* dst) {
  const int64_t kernel = c.kernel_h * c.kernel_w;
  const Family family = plan.family;
  note_family_run(pass, family);
  if (family == Family::kChannelVectors) {
    const WindowClasses classes(c, src_h, src_w);
    const bool skip = skips_border(classes, c.out_h * c.out_w, kernel, plan.channels_last);
    // Kernel-major taps where the pass skips the border or reads pixel-major staging (WindowOffsets).
    const auto packed = pack_channel_vector_weights<T, Arch::kTiles.vec_bytes>(
        cv_block_channels<T, Arch>(), groups, outs, c.channels, kernel, w, skip || plan.pixel_major);
    channel_vector_batch<T, Arch>(c, batch, groups, outs, src, src_h, src_w, packed.data(), bias, dst,
                                  plan.channels_last, plan.pixel_major, skip ? &classes : nullptr);
  } else if (family == Family::kPlanesFirstLayer) {
    TORCH_INTERNAL_ASSERT(!plan.channels_last, "cnnext: ", family_name(family), " has no channels_last kernel");
    const auto packed = pack_pixel_vector_weights<T>(Arch::kTiles.oc_block, groups, outs, c.channels, kernel, w);
    plane_batch<T, Arch>(c, batch, groups, outs, src, src_h, src_w, packed, bias, dst);
  } else {
    TORCH_INTERNAL_ASSERT(!plan.channels_last, "cnnext: ", family_name(family), " has no channels_last kernel");
    const auto packed = pack_pixel_vector_weights<T>(Arch::kTiles.oc_block, groups, outs, c.channels, kernel, w);
    correlate_batch<T, Arch>(family, c, batch, groups, outs, src, src_h, src_w, packed, bias, dst);
  }
}

template <typename T, class Arch>
bool all_finite(const T* x, int64_t n) {
  return at::parallel_reduce(
      0, n, 1 << 16, true,
      [&](int64_t begin, int64_t end, bool ok) {
        return ok && all_finite_range<Arch::kTiles.vec_bytes>(x + begin, end - begin);
      },
      [](bool a, bool b) { return a && b; });
}

// What a chunk's partial grad_weight holds when sum_over_batch_chunks hands it to `add`.
enum class Partial { kZeroed, kUnwritten };

// The batch cut into BatchChunks: add(first, last, partial, bias_partial) adds samples
// [first, last) into its own partial grad_weight, zeroed (kZeroed) or for `add` to write in full
// first (kUnwritten), and bias sums (in double, or null without grad_bias); the partials are then
// added in chunk order. No two threads add into the same memory, and the result depends neither on
// scheduling nor on the thread count.
template <typename T, typename Fn>
void sum_over_batch_chunks(const Conv2dParams& p, T* grad_weight, T* grad_bias, Partial start, const Fn& add) {
  const int64_t weight_numel = p.out_channels * p.in_per_group() * p.kernel_plane();
  const BatchChunks chunking(p.batch);
  const int64_t chunks = chunking.count;
  // Each chunk's thread zeroes its own partial sums: zeroing them all up front (a batch of 8 has 8
  // dW-sized partials) ran on one thread and touched every page of them first.
  const std::unique_ptr<T[]> partials(new T[chunks * weight_numel]);
  std::vector<double> bias_partials(grad_bias ? chunks * p.out_channels : 0, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      T* partial = partials.get() + chunk * weight_numel;
      if (start == Partial::kZeroed) std::fill(partial, partial + weight_numel, T(0));
      add(chunking.begin(chunk), chunking.begin(chunk + 1), partial,
          grad_bias ? bias_partials.data() + chunk * p.out_channels : nullptr);
    }
  });
  // Chunk after chunk over a run of elements, so that the loops run over contiguous memory.
  at::parallel_for(0, weight_numel, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) grad_weight[i] = T(0) + partials[i];
    for (int64_t t = 1; t < chunks; ++t)
      for (int64_t i = begin; i < end; ++i) grad_weight[i] += partials[t * weight_numel + i];
  });
  for (int64_t oc = 0; grad_bias && oc < p.out_channels; ++oc) {
    double sum = 0;
    for (int64_t t = 0; t < chunks; ++t) sum += bias_partials[t * p.out_channels + oc];
    grad_bias[oc] = static_cast<T>(sum);
  }
}

// bias_partial[c] += the sum of channel c, c < channels, over pixels [q0, q1) of the batch, of NCHW
// planes of `plane` pixels (`planes` at channel 0 of the first sample, `channels_all` channels per sample).
template <typename T, class Arch>
void add_run_sums(const T* planes, int64_t channels_all, int64_t plane, int64_t q0, int64_t q1, int64_t channels,
                  double* bias_partial) {
  for (int64_t q = q0; q < q1;) {
    const int64_t n = q / plane, run = std::min(q1, (n + 1) * plane) - q;
    for (int64_t c = 0; c < channels; ++c)
      bias_partial[c] +=
          vector_sum<Arch::kTiles.vec_bytes, T>(planes + (n * channels_all + c) * plane + q % plane, run);
    q += run;
  }
}

// bias_partial[oc] += the sum of plane oc of `count` samples of one group (`gy` at its first channel).
template <typename T, class Arch>
void add_plane_sums(const Conv2dParams& p, const T* gy, int64_t count, double* bias_partial) {
  add_run_sums<T, Arch>(gy, p.out_channels, p.out_plane(), 0, count * p.out_plane(), p.out_per_group(), bias_partial);
}

// The same for channels_last grad_output: `count` samples of pixels `stride` elements apart.
template <typename T>
void add_pixel_sums(const Conv2dParams& p, const T* gy, int64_t count, int64_t stride, double* bias_partial) {
  std::vector<T> sums(p.out_per_group());
  for (int64_t s = 0; s < count; ++s) {
    std::fill(sums.begin(), sums.end(), T(0));
    for (int64_t q = 0; q < p.out_plane(); ++q) {
      const T* row = gy + (s * p.out_plane() + q) * stride;
      for (int64_t oc = 0; oc < p.out_per_group(); ++oc) sums[oc] += row[oc];
    }
    for (int64_t oc = 0; oc < p.out_per_group(); ++oc) bias_partial[oc] += sums[oc];
  }
}

// grad_weight[g][oc][t] = sums[g][t][oc] for `groups` groups of `taps` x `cout` tap-major sums, t = (input
// channel, kernel tap) of `kernel` taps; channels_last: grad_weight[g][oc][tap][channel] = sums[g][t][oc].
// On every thread (megabytes for a 512-channel layer).
template <typename T, class Arch>
void transpose_tap_major(const T* sums, int64_t groups, int64_t taps, int64_t kernel, int64_t cout, T* grad_weight,
                         bool channels_last) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>, kTapsPerTask = 16 * V;
  // Rows of the sums per transpose: `kernel` apart in channels_last, each tap's channels a run of dW's rows.
  const int64_t rows = channels_last ? taps / kernel : taps, row_step = channels_last ? kernel : 1;
  const int64_t parts = (rows + kTapsPerTask - 1) / kTapsPerTask, planes = channels_last ? kernel : 1;
  at::parallel_for(0, groups * planes * parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / (planes * parts), tap = task / parts % planes;
      const int64_t r0 = task % parts * kTapsPerTask, n = std::min(kTapsPerTask, rows - r0);
      const T* src = sums + (g * taps + r0 * row_step + tap) * cout;
      T* dst = grad_weight + g * cout * taps + tap * rows + r0;
      transpose_rows<T, B>(src, row_step * cout, n, cout, dst, taps);
    }
  });
}

// grad_weight with channel vectors for a group's weight gradient larger than kWeightSumsBytes: a
// partial per batch chunk (channel_vector_grad_weight) would sweep sums that do not stay in L2, one
// sample at a time. Here the batch is staged in sets of samples shared by every task (each sample's
// planes, and NCHW grad_output transposed), and each task owns a block of output channels and a part of
// the taps: its slice of the tap-major sums, which stays in L2 and gets one update per set of samples and
// band of rows, the set's samples reduced in registers. Each task adds the sets in order, so the result
// does not depend on the thread count.
template <typename T, class Arch>
void channel_vector_grad_weight_in_sets(const Conv2dParams& p, const Correlation& cv, const T* grad_output,
                                        const T* input, T* grad_weight, T* grad_bias, bool channels_last) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, element = sizeof(T);
  constexpr int64_t block_outs = cv_block_channels<T, Arch>(), kTaps = cv_width<Arch>(Arch::kTiles.cv_vectors);
  const int64_t cin = p.in_per_group(), cout = p.out_per_group(), pixels = p.out_plane(), taps = cv.taps();
  const int64_t staged_sample = cin * cv.staging.rows * cv.staging.cols, gy_sample = pixels * cout;
  const Activations x{p.groups, cin, p.in_plane(), channels_last}, dy{p.groups, cout, pixels, channels_last};
  const WeightTapSweep sweep(cv, p.in_h, p.in_w, channels_last);
  // Samples per set: as many as kSharedStagingBytes holds, staged planes and (NCHW) grad_output.
  const int64_t sample_bytes = (staged_sample + (channels_last ? 0 : gy_sample)) * p.groups * element;
  const int64_t set = std::clamp<int64_t>(kSharedStagingBytes / std::max<int64_t>(1, sample_bytes), 1, p.batch);
  // Tasks: blocks of output channels x parts of the taps, enough for kMaxChunks tasks and each part's sums
  // within kWeightSumsBytes / 2 (beside a band of staged rows), parts in whole steps.
  const int64_t blocks = (cout + block_outs - 1) / block_outs;
  const int64_t kMaxTasks = BatchChunks::kMaxChunks;
  const int64_t wanted = std::max((kMaxTasks + blocks * p.groups - 1) / (blocks * p.groups),
                                  (taps * block_outs * element + kWeightSumsBytes / 2 - 1) / (kWeightSumsBytes / 2));
  const int64_t parts = std::clamp<int64_t>(wanted, 1, std::max<int64_t>(1, taps / kTaps));
  const int64_t part_taps = round_up((taps + parts - 1) / parts, kTaps);
  // Left uninitialized: each task's first sweep writes its slice of the sums, the staging every value of a set (a
  // zeroing pass up front ran on one thread over megabytes).
  const std::unique_ptr<T[]> tap_major(new T[p.out_channels * taps]);
  const std::unique_ptr<T[]> staged(new T[set * p.groups * staged_sample]);
  const std::unique_ptr<T[]> gyT(new T[channels_last ? 0 : set * p.groups * gy_sample]);
  std::vector<double> bias_sums(grad_bias ? p.batch * p.out_channels : 0, 0.0);
  for (int64_t n0 = 0; n0 < p.batch; n0 += set) {
    const int64_t count = std::min(set, p.batch - n0);
    at::parallel_for(0, count * p.groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t sg = begin; sg < end; ++sg) {
        const int64_t s = sg / p.groups, g = sg % p.groups, n = n0 + s;
        const T* group_gy = grad_output + dy.offset(n * p.groups + g, 0);
        double* bias = grad_bias ? bias_sums.data() + n * p.out_channels + g * cout : nullptr;
        if (bias && channels_last) {
          add_pixel_sums(p, group_gy, 1, p.out_channels, bias);
        } else if (bias) {
          add_plane_sums<T, Arch>(p, group_gy, 1, bias);
        }
        stage_channel_vector_input<T, Arch::kTiles.vec_bytes>(input + x.offset(n * p.groups + g, 0), cin, p.in_h,
                                                              p.in_w, cv.staging,
                                                              staged.get() + (g * set + s) * staged_sample,
                                                              x.pixel_stride(), channels_last);
        if (!channels_last)
          transpose_rows<T, Arch::kTiles.vec_bytes>(group_gy, pixels, cout, pixels,
                                                    gyT.get() + (g * set + s) * gy_sample, cout);
      }
    });
    // A step sweeps a band: the same output rows of a few samples, whose grad_output rows of a block and
    // the input rows they read fit kPixelBandBytes; whole planes of as many samples as fit, else rows of one.
    const int64_t row_bytes = (p.out_w * block_outs + cin * cv.staging.cols * cv.stride_h) * element;
    const int64_t out_h = std::max<int64_t>(p.out_h, 1);
    const int64_t band_samples = std::clamp<int64_t>(kPixelBandBytes / (out_h * row_bytes), 1, count);
    const int64_t band_rows = std::clamp<int64_t>(kPixelBandBytes / (band_samples * row_bytes), 1, out_h);
    at::parallel_for(0, p.groups * blocks * parts, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t g = task / (blocks * parts), oc0 = task / parts % blocks * block_outs, part = task % parts;
        const int64_t t0 = std::min(taps, part * part_taps), t1 = std::min(taps, t0 + part_taps);
        const int64_t width = std::min(block_outs, cout - oc0);
        T* sums = tap_major.get() + g * taps * cout + oc0;
        // grad_output with the channels of a pixel side by side: channels_last as it is, else gyT.
        const T* rows = channels_last ? grad_output + dy.offset(n0 * p.groups + g, oc0)
                                      : gyT.get() + g * set * gy_sample + oc0;
        const int64_t row_pixel = channels_last ? p.out_channels : cout;
        const int64_t row_sample = channels_last ? pixels * p.out_channels : gy_sample;
        with_vector_count<Arch::kTiles.cv_vectors>(width / V, [&](auto vectors) {
          constexpr int64_t kVecs = decltype(vectors)::value;
          for (int64_t s0 = 0; s0 < count; s0 += band_samples) {
            // The task's first sweep writes its slice of the sums; the rest add into it.
            const ChannelVectorWeightBatch<T> b{staged.get() + (g * set + s0) * staged_sample,
                                                staged_sample,
                                                rows + s0 * row_sample,
                                                row_pixel,
                                                row_sample,
                                                std::min(band_samples, count - s0),
                                                &sweep,
                                                p.out_h,
                                                p.out_w,
                                                band_rows,
                                                t1,
                                                sums,
                                                cout,
                                                n0 == 0 && s0 == 0};
            channel_vector_weight_block<T, Arch, kVecs>(b, t0);
          }
        });
      }
    });
  }
  transpose_tap_major<T, Arch>(tap_major.get(), p.groups, taps, p.kernel_plane(), cout, grad_weight, channels_last);
  for (int64_t oc = 0; grad_bias && oc < p.out_channels; ++oc) {
    double sum = 0;
    for (int64_t n = 0; n < p.batch; ++n) sum += bias_sums[n * p.out_channels + oc];
    grad_bias[oc] = static_cast<T>(sum);
  }
}

// grad_weight with channel vectors (grad_weight_channel_vectors.h) on the
// plan's correlation `cv` (rows only as wide as the windows read).
// NCHW or channels_last activations (grad_output and input, `channels_last`): the
// latter's grad_output already holds the channels of a pixel side by side.
template <typename T, class Arch>
void channel_vector_grad_weight(const Conv2dParams& p, const Correlation& cv, const T* grad_output, const T* input,
                                T* grad_weight, T* grad_bias, bool channels_last) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>;
  constexpr int64_t block_outs = cv_block_channels<T, Arch>();
  const int64_t cin = p.in_per_group(), cout = p.out_per_group(), pixels = p.out_plane();
  const int64_t taps = cv.taps();
  if (taps * cout * static_cast<int64_t>(sizeof(T)) > kWeightSumsBytes)
    return channel_vector_grad_weight_in_sets<T, Arch>(p, cv, grad_output, input, grad_weight, grad_bias,
                                                       channels_last);
  const int64_t staged_sample = cin * cv.staging.rows * cv.staging.cols, gy_sample = pixels * cout;
  const Activations x{p.groups, cin, p.in_plane(), channels_last}, dy{p.groups, cout, pixels, channels_last};
  const WeightTapSweep sweep(cv, p.in_h, p.in_w, channels_last);
  // Samples staged together: as many as fit in the staging budget, so each pass over the taps
  // reads them from cache; up to 32, for long reductions per partial-sum update.
  const int64_t stage_samples = std::clamp<int64_t>(
      kDirectStagingBytes / ((staged_sample + gy_sample) * static_cast<int64_t>(sizeof(T))), 1, 32);
  // The sums tap-major, [group][tap][output channel] (grad_weight_channel_vectors.h), transposed into dW last.
  std::vector<T> tap_major(p.out_channels * taps);
  // Each chunk's first sweep of a block writes its sums (ChannelVectorWeightBatch::first).
  sum_over_batch_chunks(p, tap_major.data(), grad_bias, Partial::kUnwritten, [&](int64_t first, int64_t last,
                                                                                  T* partial, double* bias_partial) {
    AlignedBuffer<T> staged(stage_samples * staged_sample);
    AlignedBuffer<T> gyT(channels_last ? 0 : stage_samples * gy_sample);
    for (int64_t n0 = first; n0 < last; n0 += stage_samples) {
      const int64_t count = std::min(stage_samples, last - n0);
      for (int64_t g = 0; g < p.groups; ++g) {
        const T* group_gy = grad_output + dy.offset(n0 * p.groups + g, 0);
        if (bias_partial && channels_last) {
          add_pixel_sums(p, group_gy, count, p.out_channels, bias_partial + g * cout);
        } else if (bias_partial) {
          add_plane_sums<T, Arch>(p, group_gy, count, bias_partial + g * cout);
        }
        for (int64_t s = 0; s < count; ++s) {
          stage_channel_vector_input<T, Arch::kTiles.vec_bytes>(input + x.offset((n0 + s) * p.groups + g, 0), cin,
                                                                p.in_h, p.in_w, cv.staging,
                                                                staged.data() + s * staged_sample, x.pixel_stride(),
                                                                channels_last);
          if (!channels_last)
            transpose_rows<T, Arch::kTiles.vec_bytes>(group_gy + s * p.out_channels * pixels, pixels, cout, pixels,
                                                      gyT.data() + s * gy_sample, cout);
        }
        // grad_output with the channels of a pixel side by side: channels_last as it is, else gyT.
        const T* rows = channels_last ? group_gy : gyT.data();
        const int64_t row_pixel = channels_last ? p.out_channels : cout;
        const int64_t row_sample = channels_last ? pixels * p.out_channels : gy_sample;
        // Bands of output rows whose grad_output rows of a block, and the input rows they read, for the
        // staged samples fit kPixelBandBytes.
        const int64_t row_bytes = count * (p.out_w * block_outs + cin * cv.staging.cols * cv.stride_h) *
                                  static_cast<int64_t>(sizeof(T));
        const int64_t band_rows = std::clamp<int64_t>(kPixelBandBytes / row_bytes, 1, std::max<int64_t>(p.out_h, 1));
        for (int64_t oc0 = 0; oc0 < cout; oc0 += block_outs) {
          const ChannelVectorWeightBatch<T> b{staged.data(), staged_sample, rows + oc0, row_pixel,
                                              row_sample,    count,         &sweep,     p.out_h,
                                              p.out_w,       band_rows,     taps,       partial + g * taps * cout + oc0,
                                              cout,          n0 == first};
          with_vector_count<Arch::kTiles.cv_vectors>((cout - oc0) / V, [&](auto vectors) {
            channel_vector_weight_block<T, Arch, decltype(vectors)::value>(b);
          });
        }
      }
    }
  });
  transpose_tap_major<T, Arch>(tap_major.data(), p.groups, taps, p.kernel_plane(), cout, grad_weight, channels_last);
}

// One sample's group of input channels (x: its first channel, pixels and channels as `a` lays them
// out) into pixel-major rows of the window region `pp`, the channels of a pixel side by side:
// staged[(r * pp.cols + c) * cin + ch] = x[ch][r - pad_top][c - pad_left], zero outside the input.
template <typename T, class Arch>
void stage_window_pixels(const Conv2dParams& p, const PaddedPlanes& pp, const Activations& a, const T* x, T* staged) {
  const int64_t cin = p.in_per_group();
  const Staging region{pp.rows, pp.cols, p.pad_top, p.pad_left, 1, 1};
  if (a.channels_last) return stage_pixels(x, cin, p.in_h, p.in_w, region, staged, a.pixel_stride());
  std::fill(staged, staged + pp.plane() * cin, T(0));
  int64_t y_lo, y_hi, x_lo, x_hi;
  staged_source_range(p.in_h, p.pad_top, 1, pp.rows, y_lo, y_hi);
  staged_source_range(p.in_w, p.pad_left, 1, pp.cols, x_lo, x_hi);
  for (int64_t y = y_lo; y < y_hi; ++y)
    transpose_rows<T, Arch::kTiles.vec_bytes>(x + y * p.in_w + x_lo, a.plane, cin, x_hi - x_lo,
                                              staged + ((y + p.pad_top) * pp.cols + x_lo + p.pad_left) * cin, cin);
}

// grad_weight with vectors over input channels (grad_weight_input_vectors.h): per batch chunk,
// sample after sample, each group's input staged pixel-major (stage_window_pixels) and its grad_output
// with the channels of a pixel side by side (channels_last as it is, NCHW transposed); the sums
// are kept tap-major ([tap][oc][ic], the steps' rows) and put in dW's order at the chunk's end.
template <typename T, class Arch>
void input_vector_grad_weight(const Conv2dParams& p, const T* grad_output, const T* input, T* grad_weight,
                              T* grad_bias, bool channels_last) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>;
  const int64_t cin = p.in_per_group(), cout = p.out_per_group(), taps = p.kernel_plane(), pixels = p.out_plane();
  const PaddedPlanes pp(p);
  const Activations x{p.groups, cin, p.in_plane(), channels_last}, dy{p.groups, cout, pixels, channels_last};
  std::vector<int64_t> tap(taps);
  for (int64_t kh = 0; kh < p.kernel_h; ++kh)
    for (int64_t kw = 0; kw < p.kernel_w; ++kw)
      tap[kh * p.kernel_w + kw] = (kh * p.dilation_h * pp.cols + kw * p.dilation_w) * cin;
  const int64_t group_dw = taps * cout * cin;
  // Bands of output rows whose staged rows and grad_output stay in cache while every tile of taps
  // and channels sweeps them (a 64-channel sample of 56 x 56 pixels is 1.6 MB of both).
  const int64_t row_bytes = (p.stride_h * pp.cols * cin + p.out_w * cout) * static_cast<int64_t>(sizeof(T));
  const int64_t band = std::clamp<int64_t>(kPixelBandBytes / std::max<int64_t>(1, row_bytes), 1, p.out_h);
  sum_over_batch_chunks(p, grad_weight, grad_bias, Partial::kZeroed,
                        [&](int64_t first, int64_t last, T* partial, double* bias_partial) {
    AlignedBuffer<T> staged(pp.plane() * cin);
    AlignedBuffer<T> gyT(channels_last ? 0 : pixels * cout);
    AlignedBuffer<T> dw(p.groups * group_dw);
    for (int64_t n = first; n < last; ++n) {
      for (int64_t g = 0; g < p.groups; ++g) {
        const T* group_gy = grad_output + dy.offset(n * p.groups + g, 0);
        if (bias_partial && channels_last) {
          add_pixel_sums(p, group_gy, 1, p.out_channels, bias_partial + g * cout);
        } else if (bias_partial) {
          add_plane_sums<T, Arch>(p, group_gy, 1, bias_partial + g * cout);
        }
        stage_window_pixels<T, Arch>(p, pp, x, input + x.offset(n * p.groups + g, 0), staged.data());
        if (!channels_last)
          transpose_rows<T, Arch::kTiles.vec_bytes>(group_gy, pixels, cout, pixels, gyT.data(), cout);
        const T* rows = channels_last ? group_gy : gyT.data();
        const int64_t gy_pixel = channels_last ? p.out_channels : cout, x_row = p.stride_h * pp.cols * cin;
        for (int64_t oh = 0; oh < p.out_h; oh += band) {
          for (int64_t ic0 = 0; ic0 < cin;) {
            with_vector_count<4>((cin - ic0) / V, [&](auto vectors) {
              constexpr int64_t kVecs = decltype(vectors)::value;
              const InputVectorWeightSample<T> s{staged.data() + oh * x_row + ic0,
                                                 x_row,
                                                 p.stride_w * cin,
                                                 rows + oh * p.out_w * gy_pixel,
                                                 gy_pixel,
                                                 std::min(band, p.out_h - oh),
                                                 p.out_w,
                                                 tap.data(),
                                                 dw.data() + g * group_dw + ic0,
                                                 cout * cin,
                                                 cin};
              input_vector_weight_sample<T, Arch, kVecs>(s, taps, cout);
              ic0 += kVecs * V;
            });
          }
        }
      }
    }
    // dW's order: [oc][ic][tap], or channels_last [oc][tap][ic], whose rows of input channels the sums' are.
    for (int64_t g = 0; g < p.groups; ++g)
      for (int64_t oc = 0; oc < cout; ++oc)
        for (int64_t t = 0; t < taps; ++t) {
          const T* sums = dw.data() + g * group_dw + (t * cout + oc) * cin;
          if (channels_last) {
            std::copy(sums, sums + cin, partial + ((g * cout + oc) * taps + t) * cin);
          } else {
            for (int64_t ic = 0; ic < cin; ++ic) partial[((g * cout + oc) * cin + ic) * taps + t] = sums[ic];
          }
        }
  });
}

// grad_weight over shifted planes (planes_first_layer.h): per batch chunk, sets of samples whose
// copies of one band fit the staging budget, each block of output channels reducing over the set.
template <typename T, class Arch>
void plane_grad_weight(const Conv2dParams& p, const Correlation& c, const T* grad_output, const T* input,
                       T* grad_weight, T* grad_bias) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, kOcBlock = Arch::kTiles.oc_block;
  const int64_t cin = p.in_per_group(), cout = p.out_per_group(), plane = p.out_plane();
  const ShiftedBands bands = shifted_bands(c, V, sizeof(T));
  const int64_t copies = bands.size();
  const std::vector<int64_t> tap = shifted_tap_offsets(c, bands);
  // Up to 8 samples, for long reductions that pay for the final horizontal sums.
  const int64_t set = std::clamp<int64_t>(kDirectStagingBytes / (copies * static_cast<int64_t>(sizeof(T))), 1, 8);
  sum_over_batch_chunks(p, grad_weight, grad_bias, Partial::kZeroed,
                        [&](int64_t first, int64_t last, T* partial, double* bias_partial) {
    AlignedBuffer<T> staged(staged_size(c, V));
    AlignedBuffer<T> shifted(set * copies);
    AlignedBuffer<T> sums(kOcBlock * c.taps() * V);
    for (int64_t n0 = first; n0 < last; n0 += set) {
      const int64_t count = std::min(set, last - n0);
      for (int64_t g = 0; g < p.groups; ++g) {
        const T* group_gy = grad_output + (n0 * p.out_channels + g * cout) * plane;
        if (bias_partial) add_plane_sums<T, Arch>(p, group_gy, count, bias_partial + g * cout);
        for (int64_t band = 0; band < bands.count; ++band) {
          const int64_t row0 = bands.first_row(band), rows = bands.band_rows(band, c.out_h);
          // Staged again per band: a copy per input value, against cout x taps multiply-adds.
          for (int64_t s = 0; s < count; ++s) {
            stage_planes(input + ((n0 + s) * p.in_channels + g * cin) * p.in_plane(), cin, p.in_h, p.in_w,
                         c.staging, staged.data());
            shift_columns<T, Arch>(c, staged.data(), row0, rows, bands, shifted.data() + s * copies);
          }
          for (int64_t oc0 = 0; oc0 < cout; oc0 += kOcBlock) {
            const ShiftedWeightGrad<T> b{shifted.data(), copies, group_gy + oc0 * plane + row0 * c.out_w,
                                         p.out_channels * plane, plane, count, rows * c.out_w};
            plane_weight_grad<T, Arch>(b, tap, sums.data(), partial + (g * cout + oc0) * c.taps());
          }
        }
      }
    }
  });
}

// bias_partial[c] += the sum of rows[q * stride + c] over q < count, c < channels: in vectors of T
// over a band of pixel rows, added once into the partial in double.
template <typename T, class Arch>
void add_row_sums(const T* rows, int64_t stride, int64_t count, int64_t channels, double* bias_partial) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>;
  int64_t c = 0;
  for (; c + V <= channels; c += V) {
    Vec<T, B> sum = {};
    for (int64_t q = 0; q < count; ++q) sum += load_vec<B>(rows + q * stride + c);
    for (int64_t l = 0; l < V; ++l) bias_partial[c + l] += sum[l];
  }
  for (; c < channels; ++c) {
    T sum = 0;
    for (int64_t q = 0; q < count; ++q) sum += rows[q * stride + c];
    bias_partial[c] += sum;
  }
}

// A strided 1 x 1 layer's input as the pointwise families read it (params.h is_one_by_one): channels
// [c0, c0 + count) of the input pixel under each output pixel of [q0, q1) (channels_last), packed pixel
// after pixel into `dst`. A block or band of pixels is gathered where it is used, so it is read from cache.
template <typename T>
void gather_one_by_one(const Conv2dParams& p, const T* input, int64_t c0, int64_t count, int64_t q0, int64_t q1,
                       T* dst) {
  const int64_t plane = p.out_plane();
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t n = q / plane, oh = q % plane / p.out_w, ow = q % p.out_w;
    const T* src = input + ((n * p.in_h + oh * p.stride_h) * p.in_w + ow * p.stride_w) * p.in_channels + c0;
    std::copy(src, src + count, dst + (q - q0) * count);
  }
}

// The inverse of gather_one_by_one for a strided 1 x 1 layer's grad_input (channels_last): `src`, the rows of
// channels [c0, c0 + count) of output pixels [q0, q1), goes to the input pixel under each, and the input pixels
// that no output pixel lies over get zeros in those channels. An output pixel owns the input pixels of its
// stride cell (the last row and column of outputs: to the input's edge), so every input pixel is written once.
template <typename T>
void scatter_one_by_one(const Conv2dParams& p, const T* src, int64_t c0, int64_t count, int64_t q0, int64_t q1,
                        T* grad_input) {
  const int64_t plane = p.out_plane();
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t n = q / plane, oh = q % plane / p.out_w, ow = q % p.out_w;
    const int64_t h0 = oh * p.stride_h, h1 = oh + 1 == p.out_h ? p.in_h : std::min(p.in_h, h0 + p.stride_h);
    const int64_t w0 = ow * p.stride_w, w1 = ow + 1 == p.out_w ? p.in_w : std::min(p.in_w, w0 + p.stride_w);
    for (int64_t ih = h0; ih < h1; ++ih)
      for (int64_t iw = w0; iw < w1; ++iw) {
        T* dst = grad_input + ((n * p.in_h + ih) * p.in_w + iw) * p.in_channels + c0;
        if (ih == h0 && iw == w0) {
          std::copy(src + (q - q0) * count, src + (q - q0 + 1) * count, dst);
        } else {
          std::fill(dst, dst + count, T(0));
        }
      }
  }
}

// How many times a pointwise grad_weight's operands (both sides' channels over the pixels) must
// outweigh a group's sums for a chunk of its pixels to take partial sums of its own.
constexpr int64_t kPointwiseOperandsPerPartial = 16;

// grad_weight of a pointwise layer (grad_weight_pointwise.h). The pixels of the whole batch, in order,
// are cut into chunks, each summed into its own partial sums, the partials then added in chunk order; a
// chunk's broadcast rows are cut into parts run as tasks of their own. Both follow from the shape alone,
// so the result does not depend on the thread count.
template <typename T, class Arch>
void pointwise_grad_weight(const Conv2dParams& p, bool channels_last, const T* grad_output, const T* input,
                           T* grad_weight, T* grad_bias) {
  constexpr int64_t B = Arch::kTiles.vec_bytes, V = kLanes<T, B>, kMaxVecs = pointwise_max_vectors<Arch>();
  const int64_t cin = p.in_per_group(), cout = p.out_per_group(), groups = p.groups, plane = p.out_plane();
  const int64_t pixels = p.batch * plane, group_numel = cin * cout, weight_numel = groups * group_numel;
  const bool strided = !is_pointwise(p);  // the input's pixels are gathered band by band
  TORCH_INTERNAL_ASSERT(channels_last || !strided, "cnnext: grad_weight_pointwise runs NCHW stride 1 only");
  // The vector side. channels_last: the input wherever it fills a step of the most vectors or has the more
  // channels, as its sums are dW's rows as they lie, and its values are fewer for the parts of the rows
  // (below) to read again each. NCHW: the operand with fewer channels where they fill a vector, as it is
  // the one transposed into pixel rows. Otherwise grad_output, whose sums are transposed into dW.
  const bool vectors_in = channels_last ? cin >= cout || cin >= kMaxVecs * V : (cin <= cout ? cin >= V : cout < V);
  const int64_t vector_channels = vectors_in ? cin : cout, rows = vectors_in ? cout : cin;
  // Chunks where the operands outweigh the partial sums kPointwiseOperandsPerPartial times: one on small
  // planes of many channels (7 x 7, 960 -> 160), whose tasks are parts of the rows instead, up to
  // kMaxChunks on large planes of few (112 x 112, 16 -> 96), where the rows are too few to part.
  const int64_t kMaxTasks = BatchChunks::kMaxChunks;
  const int64_t chunks = std::clamp<int64_t>(
      pixels * (cin + cout) / (kPointwiseOperandsPerPartial * std::max<int64_t>(1, group_numel)), 1, kMaxTasks);
  // Parts of whole steps of a tile of the most vectors.
  const int64_t step_rows = pointwise_rows<Arch>(std::min(kMaxVecs, (vector_channels + V - 1) / V));
  const int64_t parts = std::clamp<int64_t>(kMaxTasks / (chunks * groups), 1, (rows + step_rows - 1) / step_rows);
  const int64_t part_rows = round_up((rows + parts - 1) / parts, step_rows);
  // Pixels per band: the band's rows of both operands stay in L2 while every tile sweeps them.
  const int64_t band_bytes = (std::min(rows, part_rows) + vector_channels) * static_cast<int64_t>(sizeof(T));
  const int64_t band = std::max<int64_t>(1, std::min(pixels, std::max<int64_t>(16, kPixelBandBytes / band_bytes)));
  // The sums' rows, whole vectors (grad_weight_pointwise.h); they go straight into dW where they are
  // its rows as they lie and a single chunk has them all.
  const int64_t sums_row = round_up(vector_channels, V), group_sums = rows * sums_row;
  const bool direct_sums = vectors_in && chunks == 1 && sums_row == vector_channels;
  const std::unique_ptr<T[]> partials(direct_sums ? nullptr : new T[chunks * groups * group_sums]);
  T* const sums = direct_sums ? grad_weight : partials.get();
  std::vector<double> bias_partials(grad_bias ? chunks * p.out_channels : 0, 0.0);
  // NCHW: the operands as [sample][channel][pixel]; the vector side transposed into pixel rows, the whole
  // batch's at once where several parts of the rows would each transpose it again, else a band at a time.
  const T* const vector_nchw = vectors_in ? input : grad_output;
  const T* const broadcast_nchw = vectors_in ? grad_output : input;
  const int64_t vector_all = vectors_in ? p.in_channels : p.out_channels;
  const int64_t broadcast_all = vectors_in ? p.out_channels : p.in_channels;
  const bool transpose_batch = !channels_last && parts > 1;
  UninitializedVector<T> batch_rows(transpose_batch ? pixels * vector_all : 0);
  if (transpose_batch)
    at::parallel_for(0, p.batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n)
        transpose_rows<T, B>(vector_nchw + n * vector_all * plane, plane, vector_all, plane,
                             batch_rows.data() + n * plane * vector_all, vector_all);
    });
  at::parallel_for(0, chunks * groups * parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t chunk = task / (groups * parts), g = task / parts % groups, part = task % parts;
      const int64_t row0 = std::min(rows, part * part_rows), row1 = std::min(rows, row0 + part_rows);
      const int64_t first = chunk * pixels / chunks, last = (chunk + 1) * pixels / chunks;
      T* chunk_sums = sums + (chunk * groups + g) * group_sums;
      std::fill(chunk_sums + row0 * sums_row, chunk_sums + row1 * sums_row, T(0));
      // A band's strided input pixels (gathered), or its NCHW vector side (transposed).
      const bool staged = strided || (!channels_last && !transpose_batch);
      UninitializedVector<T> band_rows(staged ? std::min(band, last - first) * (strided ? cin : vector_channels) : 0);
      double* bias = grad_bias && part == 0 ? bias_partials.data() + chunk * p.out_channels + g * cout : nullptr;
      for (int64_t q = first; q < last; q += band) {
        const int64_t q1 = std::min(last, q + band);
        if (!channels_last) {
          const T* vectors = band_rows.data();
          int64_t vector_pixel = vector_channels;
          if (transpose_batch) {
            vectors = batch_rows.data() + q * vector_all + g * vector_channels;
            vector_pixel = vector_all;
          } else {  // each sample's run of the band's pixels
            for (int64_t r = q; r < q1;) {
              const int64_t n = r / plane, run = std::min(q1, (n + 1) * plane) - r;
              transpose_rows<T, B>(vector_nchw + (n * vector_all + g * vector_channels) * plane + r % plane, plane,
                                   vector_channels, run, band_rows.data() + (r - q) * vector_channels,
                                   vector_channels);
              r += run;
            }
          }
          const int64_t n = q / plane;
          PointwiseWeightBatch<T> b{vectors, vector_pixel, vector_channels,
                                    broadcast_nchw + (n * broadcast_all + g * rows) * plane + q % plane, 1,
                                    q1 - q, chunk_sums, sums_row};
          b.broadcast_channel = plane;
          b.run = plane;
          b.first_run = plane - q % plane;
          b.run_gap = (broadcast_all - 1) * plane;
          pointwise_weight_band<T, Arch, true>(b, row0, row1);
          if (bias && vectors_in) {
            add_run_sums<T, Arch>(grad_output + g * cout * plane, p.out_channels, plane, q, q1, cout, bias);
          } else if (bias) {
            add_row_sums<T, Arch>(vectors, vector_pixel, q1 - q, cout, bias);
          }
          continue;
        }
        const T* x = input + q * p.in_channels + g * cin;
        int64_t x_pixel = p.in_channels;
        if (strided) {
          gather_one_by_one(p, input, g * cin, cin, q, q1, band_rows.data());
          x = band_rows.data();
          x_pixel = cin;
        }
        const T* dy = grad_output + q * p.out_channels + g * cout;
        const PointwiseWeightBatch<T> b{vectors_in ? x : dy,  vectors_in ? x_pixel : p.out_channels,
                                        vector_channels,      vectors_in ? dy : x,
                                        vectors_in ? p.out_channels : x_pixel,
                                        q1 - q,               chunk_sums,
                                        sums_row};
        pointwise_weight_band<T, Arch, false>(b, row0, row1);
        if (bias) add_row_sums<T, Arch>(dy, p.out_channels, q1 - q, cout, bias);
      }
    }
  });
  if (!direct_sums) {
    // The chunks' sums added in chunk order, as dW's rows, or as rows of its transpose, which one chunk's
    // sums in whole vectors already are. A row's sums are two runs: its vectors up to the last one, and the
    // last one's lanes past those the one before it has (pointwise_sums_column).
    const bool transpose_sums = !vectors_in && chunks == 1 && sums_row == vector_channels;
    UninitializedVector<T> transposed(vectors_in || transpose_sums ? 0 : weight_numel);
    T* const total = transpose_sums ? sums : vectors_in ? grad_weight : transposed.data();
    const int64_t last_vector = sums_row - V;
    const int64_t shift = pointwise_sums_column(last_vector, vector_channels, V) - last_vector;
    if (!transpose_sums)
      at::parallel_for(0, groups * rows, 1, [&](int64_t begin, int64_t end) {
        for (int64_t gr = begin; gr < end; ++gr) {
          const T* row = sums + gr / rows * group_sums + gr % rows * sums_row;
          T* dst = total + gr * vector_channels;
          for (const auto [v0, v1, offset] : {std::array<int64_t, 3>{0, last_vector, 0},
                                              std::array<int64_t, 3>{last_vector, vector_channels, shift}}) {
            for (int64_t v = v0; v < v1; ++v) dst[v] = row[v + offset];
            for (int64_t c = 1; c < chunks; ++c) {
              const T* chunk_row = row + c * groups * group_sums + offset;
              for (int64_t v = v0; v < v1; ++v) dst[v] += chunk_row[v];
            }
          }
        }
      });
    if (!vectors_in) {
      // dW[g][o][i] = total[g][i][o], in blocks of input channels on every thread.
      constexpr int64_t kBlock = 4 * V;
      const int64_t blocks = (cin + kBlock - 1) / kBlock;
      at::parallel_for(0, groups * blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t g = task / blocks, i0 = task % blocks * kBlock;
          transpose_rows<T, B>(total + g * group_numel + i0 * cout, cout, std::min(kBlock, cin - i0), cout,
                               grad_weight + g * group_numel + i0, cin);
        }
      });
    }
  }
  for (int64_t oc = 0; grad_bias && oc < p.out_channels; ++oc) {
    double sum = 0;
    for (int64_t c = 0; c < chunks; ++c) sum += bias_partials[c * p.out_channels + oc];
    grad_bias[oc] = static_cast<T>(sum);
  }
}

// Forward or grad_input of a pointwise layer on channels_last activations (pointwise.h). Tasks are the
// groups x blocks of pixels whose rows of the operand stay in L2 while every tile of output channels
// sweeps them; each pixel's outputs are computed by one task, whatever the thread count.
template <typename T, class Arch>
void pointwise_pass(const Conv2dParams& p, ConvPass pass, const T* operand, const T* weight, const T* bias, T* out) {
  constexpr int64_t B = Arch::kTiles.vec_bytes;
  const bool forward = pass == ConvPass::Forward;
  const int64_t cin = p.in_per_group(), cout = p.out_per_group(), groups = p.groups;
  const int64_t pixels = p.batch * p.out_plane(), reduction = forward ? cin : cout, channels = forward ? cout : cin;
  // The weight as [k][c]: forward's transposed per group, [g][i][o]; grad_input's as it is, [g][o][i].
  // Transposed on every thread, a run of output channels each: on one thread, a layer whose weight is
  // large beside its activations (7 x 7 planes) spent a tenth of its time there, the other thread waiting.
  UninitializedVector<T> transposed(forward ? groups * cin * cout : 0);
  if (forward) {
    constexpr int64_t kRun = 4 * kLanes<T, B>;
    const int64_t runs = (cout + kRun - 1) / kRun;
    at::parallel_for(0, groups * runs, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t g = task / runs, o0 = task % runs * kRun, count = std::min(kRun, cout - o0);
        transpose_rows<T, B>(weight + (g * cout + o0) * cin, cin, count, cin, transposed.data() + g * cin * cout + o0,
                             cout);
      }
    });
  }
  const T* b = forward ? transposed.data() : weight;
  const std::vector<T> zeros(bias ? 0 : channels, T(0));
  // Pixels per block: their operand rows within kPixelBandBytes, and blocks enough for kMaxChunks tasks.
  const int64_t kMaxTasks = BatchChunks::kMaxChunks;
  const int64_t fit = kPixelBandBytes / std::max<int64_t>(1, reduction * static_cast<int64_t>(sizeof(T)));
  const int64_t block = std::clamp<int64_t>(std::min(fit, (pixels + kMaxTasks - 1) / kMaxTasks), 16,
                                            std::max<int64_t>(pixels, 16));
  const int64_t blocks = (pixels + block - 1) / block;
  // A strided layer (is_one_by_one) takes each block's input pixels gathered (forward), or computes its
  // input gradient block by block into scratch and scatters it (grad_input).
  const bool strided = !is_pointwise(p);
  at::parallel_for(0, groups * blocks, 1, [&](int64_t begin, int64_t end) {
    UninitializedVector<T> staged(strided ? block * cin : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / blocks, q0 = task % blocks * block, q1 = std::min(pixels, q0 + block);
      const T* a = operand + q0 * (forward ? p.in_channels : p.out_channels) + g * reduction;
      int64_t a_pixel = forward ? p.in_channels : p.out_channels;
      T* o = out + q0 * (forward ? p.out_channels : p.in_channels) + g * channels;
      int64_t out_pixel = forward ? p.out_channels : p.in_channels;
      if (strided && forward) {
        gather_one_by_one(p, operand, g * cin, cin, q0, q1, staged.data());
        a = staged.data();
        a_pixel = cin;
      } else if (strided) {
        o = staged.data();
        out_pixel = cin;
      }
      const PointwiseProduct<T> m{a,        a_pixel,
                                  reduction, b + g * cin * cout,
                                  channels, bias ? bias + g * cout : zeros.data(),
                                  channels, o,
                                  out_pixel};
      pointwise_block<T, Arch>(m, 0, q1 - q0);
      if (strided && !forward) scatter_one_by_one(p, staged.data(), g * cin, cin, q0, q1, out);
    }
  });
}

template <typename T, class Arch>
void direct_forward(const Conv2dParams& p, const ConvPlan& plan, const T* input, const T* weight, const T* bias,
                    T* output) {
  if (plan.family == Family::kDepthwise) {
    note_family_run(ConvPass::Forward, plan.family);
    if (plan.channels_last) return depthwise_nhwc_forward<T, Arch>(p, input, weight, bias, output);
    return depthwise_forward<T, Arch>(p, input, weight, bias, output);
  }
  if (plan.family == Family::kPointwise) {
    TORCH_INTERNAL_ASSERT(plan.channels_last, "cnnext: pointwise runs channels_last activations only");
    note_family_run(ConvPass::Forward, plan.family);
    return pointwise_pass<T, Arch>(p, ConvPass::Forward, input, weight, bias, output);
  }
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>;
  const int64_t cin = p.in_per_group(), cout = p.out_per_group();
  const Correlation c = forward_correlation(p, V, plan.family != Family::kPixelVectorsBlock);
  const LayerWeights<T> w{weight, cout, cin, p.kernel_plane(), plan.channels_last};
  correlate_all<T, Arch>(ConvPass::Forward, plan, c, p.batch, p.groups, cout, input, p.in_h, p.in_w, w.as_is(),
                         bias, output);
}

// grad_input with the scattered channel vectors (channel_vectors_scatter.h), for every (set of
// samples, group, block of cv_vectors vectors of input channels), on NCHW or channels_last
// activations (a channels_last grad_output is transposed into planes, once per set and group and
// thread: read in place, its pixels' channels ran 5 % slower).
template <typename T, class Arch>
void scatter_grad_input(const Conv2dParams& p, const T* grad_output, const T* weight, T* grad_input,
                        bool channels_last) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>;
  constexpr int64_t block_ins = cv_block_channels<T, Arch>();
  const int64_t cin = p.in_per_group(), cout = p.out_per_group(), taps = p.kernel_plane(), pixels = p.out_plane();
  const int64_t blocks = (cin + block_ins - 1) / block_ins;
  // Blocks of input channels, each [output channel][kh][kw][input channel]: the taps as they are.
  const LayerWeights<T> w{weight, cout, cin, taps, channels_last};
  const auto packed =
      pack_channel_vector_weights<T, Arch::kTiles.vec_bytes>(block_ins, p.groups, cin, cout, taps, w.transposed());
  const PaddedPlanes plane(p);
  std::vector<int64_t> window(pixels);
  gather_offsets(p, plane, window.data());
  const Activations dy{p.groups, cout, pixels, channels_last}, dx{p.groups, cin, p.in_plane(), channels_last};
  // Samples per task: one where a block's packed weights stay in L2 beside its tile, from task to task;
  // else (512 outputs x 9 taps x 64 channels: 1.2 MB of float32) as many tiles as kScatterTileBytes
  // holds, so that the weights are read once per set of samples rather than once per sample, but enough
  // (set, group, block) tasks for every thread twice, in sets the threads share evenly (balanced_sets).
  // Sets where the weights fit only moved the tiles out of L2.
  const int64_t threads = std::max<int64_t>(at::get_num_threads(), 1);
  const int64_t element = sizeof(T);
  const int64_t tile_bytes = scatter_tile_size<T, Arch>(plane, 1) * element;
  const bool weights_stay = cout * taps * block_ins * element + tile_bytes <= kScatterTileBytes;
  const int64_t spread = p.batch * p.groups * blocks / (2 * threads);
  const int64_t most =
      weights_stay ? 1 : std::clamp<int64_t>(std::min(kScatterTileBytes / tile_bytes, spread), 1, p.batch);
  const int64_t sets = p.batch == 0 ? 0 : balanced_sets(p.batch, most, p.groups * blocks, threads);
  const int64_t samples = sets == 0 ? 0 : (p.batch + sets - 1) / sets;
  // A set's run of pixels, the same for every set: where each lies in the set's grad_output planes
  // (transposed, or NCHW's in place) and its window in the set's tiles.
  const int64_t gy_sample = channels_last ? cout * pixels : p.out_channels * pixels;
  std::vector<int64_t> gy_at(samples * pixels), run_window(samples * pixels);
  for (int64_t s = 0; s < samples; ++s)
    for (int64_t q = 0; q < pixels; ++q) {
      gy_at[s * pixels + q] = s * gy_sample + q;
      run_window[s * pixels + q] = s * plane.plane() + window[q];
    }
  at::parallel_for(0, sets * p.groups * blocks, 1, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> tile(scatter_tile_size<T, Arch>(plane, samples));
    AlignedBuffer<T> gy_planes(channels_last ? samples * cout * pixels : 0);
    std::vector<T*> dx_at(samples);
    int64_t planes_key = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t key = task / blocks;  // = set * groups + g
      const int64_t g = key % p.groups, set = key / p.groups, ci0 = task % blocks * block_ins;
      const int64_t n0 = set * p.batch / sets, count = (set + 1) * p.batch / sets - n0;
      if (channels_last && key != planes_key) {
        for (int64_t s = 0; s < count; ++s)
          transpose_rows<T, Arch::kTiles.vec_bytes>(grad_output + dy.offset((n0 + s) * p.groups + g, 0),
                                                    dy.pixel_stride(), pixels, cout,
                                                    gy_planes.data() + s * cout * pixels, pixels);
        planes_key = key;
      }
      const T* gy = channels_last ? gy_planes.data() : grad_output + dy.offset(n0 * p.groups + g, 0);
      for (int64_t s = 0; s < count; ++s) dx_at[s] = grad_input + dx.offset((n0 + s) * p.groups + g, ci0);
      const int64_t width = std::min(block_ins, cin - ci0);
      with_vector_count<Arch::kTiles.cv_vectors>(width / V, [&](auto vectors) {
        constexpr int64_t kCoVecs = decltype(vectors)::value;
        const ScatterBlock<T> b{gy,
                                gy_at.data(),
                                pixels,
                                count * pixels,
                                cout,
                                packed.data() + (g * cin + ci0) * cout * taps,
                                taps * width,
                                run_window.data(),
                                tile.data(),
                                kCoVecs * V};
        scatter_block<T, Arch, kCoVecs>(p, plane, b, width, count, dx_at.data(), dx.pixel_stride());
      });
    }
  });
}

template <typename T, class Arch>
void direct_grad_input(const Conv2dParams& p, const ConvPlan& plan, const T* grad_output, const T* weight,
                       T* grad_input) {
  if (plan.family == Family::kDepthwise) {
    note_family_run(ConvPass::GradInput, plan.family);
    if (plan.channels_last) return depthwise_nhwc_grad_input<T, Arch>(p, grad_output, weight, grad_input);
    return depthwise_grad_input<T, Arch>(p, grad_output, weight, grad_input);
  }
  if (plan.family == Family::kPointwise) {
    TORCH_INTERNAL_ASSERT(plan.channels_last, "cnnext: pointwise runs channels_last activations only");
    note_family_run(ConvPass::GradInput, plan.family);
    return pointwise_pass<T, Arch>(p, ConvPass::GradInput, grad_output, weight, nullptr, grad_input);
  }
  if (plan.family == Family::kChannelVectorsScatter) {
    note_family_run(ConvPass::GradInput, plan.family);
    return scatter_grad_input<T, Arch>(p, grad_output, weight, grad_input, plan.channels_last);
  }
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>;
  const int64_t cin = p.in_per_group(), cout = p.out_per_group();
  const Correlation c = grad_input_correlation(p, V, plan.family != Family::kPixelVectorsBlock);
  const LayerWeights<T> w{weight, cout, cin, p.kernel_plane(), plan.channels_last};
  const T* no_bias = nullptr;
  correlate_all<T, Arch>(ConvPass::GradInput, plan, c, p.batch, p.groups, cin, grad_output, p.out_h, p.out_w,
                         w.flipped(), no_bias, grad_input);
}

template <typename T, class Arch>
void direct_grad_weight(const Conv2dParams& p, const ConvPlan& plan, const T* grad_output, const T* input,
                        T* grad_weight, T* grad_bias) {
  constexpr int64_t V = kLanes<T, Arch::kTiles.vec_bytes>, kOcBlock = Arch::kTiles.oc_block;
  if (plan.family == Family::kDepthwise) {
    note_family_run(ConvPass::GradWeight, plan.family);
    if (plan.channels_last) return depthwise_nhwc_grad_weight<T, Arch>(p, grad_output, input, grad_weight, grad_bias);
    // Only stride-1 layers can use it.
    const bool finite_input = p.stride_h == 1 && p.stride_w == 1 &&
                              all_finite<T, Arch>(input, p.batch * p.in_channels * p.in_plane());
    return depthwise_grad_weight<T, Arch>(p, grad_output, input, grad_weight, grad_bias, finite_input);
  }
  if (plan.family == Family::kPlanesFirstLayer) {
    note_family_run(ConvPass::GradWeight, plan.family);
    return plane_grad_weight<T, Arch>(p, forward_correlation(p, V, true), grad_output, input, grad_weight, grad_bias);
  }
  if (plan.family == Family::kGradWeightInputVectors) {
    note_family_run(ConvPass::GradWeight, plan.family);
    return input_vector_grad_weight<T, Arch>(p, grad_output, input, grad_weight, grad_bias, plan.channels_last);
  }
  if (plan.family == Family::kGradWeightPointwise) {
    note_family_run(ConvPass::GradWeight, plan.family);
    return pointwise_grad_weight<T, Arch>(p, plan.channels_last, grad_output, input, grad_weight, grad_bias);
  }
  if (plan.family == Family::kGradWeightChannelVectors) {
    note_family_run(ConvPass::GradWeight, plan.family);
    channel_vector_grad_weight<T, Arch>(p, grad_weight_correlation(p, V, true), grad_output, input, grad_weight,
                                        grad_bias, plan.channels_last);
    return;
  }
  TORCH_INTERNAL_ASSERT(!plan.channels_last, "cnnext: ", family_name(plan.family), " has no channels_last kernel");
  const int64_t cin = p.in_per_group(), cout = p.out_per_group();
  const int64_t blocks = (cout + kOcBlock - 1) / kOcBlock;
  const bool in_place = plan.family == Family::kGradWeightColumnsInPlace;
  // The copied layouts read padding lanes of the input times zeros of grad_output, which an
  // infinite or NaN input would turn into NaN: flat needs a finite input, the padded rows clear
  // those lanes when the input is not.
  const bool finite_input = in_place || all_finite<T, Arch>(input, p.batch * p.in_channels * p.in_plane());
  // Flat (stride 1, finite input): as pixel_vectors_flat.h, the reduction runs over f = oh * cols + ow,
  // where cols is the staged input's row pitch, so one vector spans several narrow rows;
  // grad_output is copied at that pitch with zeros past each row's out_w.
  const bool flat = plan.family == Family::kGradWeightColumnsFlat && finite_input;
  note_family_run(ConvPass::GradWeight, flat || in_place ? plan.family : Family::kGradWeightColumns);
  Correlation c = grad_weight_correlation(p, V, flat);
  const int64_t flat_len = flat ? flat_positions(c, V) : 0;
  if (flat) {
    c.out_h = 1;  // one "row" of flat_len positions
    c.out_w = flat_len;
  }
  const int64_t gy_cols = in_place ? p.out_w : flat ? flat_len : round_up(p.out_w, V);
  const int64_t gy_pitch = flat ? flat_len : p.out_h * gy_cols;  // elements between copied channels
  // Flat reads run up to a vector (plus the kernel's width) past a sample's last plane.
  const int64_t staged_sample = staged_size(c, V);
  const int64_t gy_sample = in_place ? 0 : blocks * kOcBlock * gy_pitch;
  // Samples staged together: up to 8, for long reductions that pay for the
  // final horizontal sums, as many as fit in the staging budget.
  const int64_t stage_samples = std::clamp<int64_t>(
      kDirectStagingBytes /
          ((std::min(staged_sample, kDirectStagingBytes) + gy_sample) * static_cast<int64_t>(sizeof(T))),
      1, 8);
  sum_over_batch_chunks(p, grad_weight, grad_bias, Partial::kZeroed,
                        [&](int64_t first, int64_t last, T* partial, double* bias_partial) {
    AlignedBuffer<T> staged(stage_samples * staged_sample);
    AlignedBuffer<T> gy(stage_samples * gy_sample);
    // Adds samples [n0, n0 + count) of group g.
    auto add_samples = [&](int64_t n0, int64_t count, int64_t g) {
      const T* group_gy = grad_output + (n0 * p.out_channels + g * cout) * p.out_plane();
      // First, so the planes come into cache for the pass below.
      if (bias_partial) add_plane_sums<T, Arch>(p, group_gy, count, bias_partial + g * cout);
      for (int64_t s = 0; s < count; ++s) {
        const int64_t n = n0 + s;
        stage_planes(input + (n * p.in_channels + g * cin) * p.in_plane(), cin, p.in_h, p.in_w, c.staging,
                     staged.data() + s * staged_sample);
        if (flat) {
          for (int64_t oc = 0; oc < cout; ++oc)
            copy_rows<T, Arch>(group_gy + (s * p.out_channels + oc) * p.out_plane(), p.out_h, p.out_w,
                               gy.data() + s * gy_sample + oc * gy_pitch, c.staging.cols);
        } else if (!in_place) {
          copy_rows<T, Arch>(group_gy + s * p.out_channels * p.out_plane(), cout * p.out_h, p.out_w,
                             gy.data() + s * gy_sample, gy_cols);
        }
      }
      for (int64_t block = 0; block < blocks; ++block) {
        const int64_t oc0 = block * kOcBlock;
        T* dst = partial + (g * cout + oc0) * cin * p.kernel_plane();
        const int64_t valid = std::min(kOcBlock, cout - oc0);
        if (in_place) {
          const WeightGradBatch<T> b{staged.data(), staged_sample, group_gy + oc0 * p.out_plane(),
                                     p.out_channels * p.out_plane(), p.out_plane(), gy_cols, count};
          weight_grad_columns<T, Arch, GyRows::kInPlace>(c, b, valid, dst);
        } else {
          const WeightGradBatch<T> b{staged.data(), staged_sample, gy.data() + oc0 * gy_pitch,
                                     gy_sample, gy_pitch, gy_cols, count};
          if (finite_input) {
            weight_grad_columns<T, Arch, GyRows::kCopied>(c, b, valid, dst);
          } else {
            weight_grad_columns<T, Arch, GyRows::kCopiedMasked>(c, b, valid, dst);
          }
        }
      }
    };
    for (int64_t n0 = first; n0 < last; n0 += stage_samples)
      for (int64_t g = 0; g < p.groups; ++g) add_samples(n0, std::min(stage_samples, last - n0), g);
  });
}

template <typename T, class Arch>
T plane_sum(const T* x, int64_t n) {
  return vector_sum<Arch::kTiles.vec_bytes, T>(x, n);
}

// The entry points of one architecture's kernels, for variants.h's table.
template <typename T, class Arch>
const DirectKernels<T>& direct_kernels_of() {
  static constexpr DirectKernels<T> kernels{&direct_forward<T, Arch>, &direct_grad_input<T, Arch>,
                                            &direct_grad_weight<T, Arch>, &plane_sum<T, Arch>};
  return kernels;
}

}  // namespace
}  // namespace cpu
}  // namespace cnnext
