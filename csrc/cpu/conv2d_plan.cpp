#include "conv2d_plan.h"

#include <c10/util/Exception.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <sstream>

#include "cache_budget.h"
#include "conv2d_direct/geometry.h"

namespace cnnext {
namespace cpu {
namespace {

constexpr std::array<Family, 14> kAllFamilies = {
    Family::kIm2col,
    Family::kPlanesFirstLayer,
    Family::kPixelVectorsFlat,
    Family::kPixelVectorsBlock,
    Family::kChannelVectors,
    Family::kChannelVectorsScatter,
    Family::kGradWeightColumnsInPlace,
    Family::kGradWeightColumns,
    Family::kGradWeightColumnsFlat,
    Family::kGradWeightChannelVectors,
    Family::kGradWeightInputVectors,
    Family::kGradWeightPointwise,
    Family::kPointwise,
    Family::kDepthwise};

// Below this many multiply-adds per output element (reduction channels x
// kernel taps), copying each input value once per kernel column into shifted
// planes (planes_first_layer.h) costs less than the lanes and unaligned
// stores of rows of pixel vectors, or a round trip of the outputs through
// scratch (first layers: 9 and 27).
constexpr int64_t kFewTaps = 64;

// Reduction channels below which a layer reads an image (gray or RGB).
constexpr int64_t kImageChannels = 4;

// Output pixels per sample from which grad_weight's input vectors
// (grad_weight_input_vectors.h) reduce long enough between two updates of
// their tile sums (8 x 8: 4 x 4 and 5 x 5 planes run even with channel
// vectors, 7 x 7 even on AVX2), and the largest dW of a group whose sums stay
// in cache beside a band of rows (64 -> 128 channels of 3 x 3 win; 128 -> 128
// run even with im2col).
constexpr int64_t kInputVectorPixels = 64;
constexpr int64_t kInputVectorWeightBytes = 512 << 10;

// Reductions from which grad_weight over pixel rows (the columns families)
// loses to im2col on AVX-512 too (64 and more channels of 3 x 3).
constexpr int64_t kWideReduction = 512;

// Output pixels of the batch from which grad_weight's channel vectors summed
// in sets (a weight gradient above kWeightSumsBytes) beat a GEMM below full
// speed: below, zeroing, updating and transposing their sums costs more per
// multiply-add. VGG-11's 512-channel layers on 4 x 4 planes of 8 samples (128
// pixels) lost before the sums were transposed on every thread, and now win.
constexpr int64_t kWeightSetPixels = 128;

// Input channels up to which a channels_last pointwise forward runs its own
// products (pointwise.h), which keep a tile's sums in registers over the whole
// reduction, rather than the channel vectors, which cut it into parts for the
// cache (MobileNetV2's 384 - 960-channel layers: 0.90 - 0.96 against 0.99 -
// 1.07 of torch's time; up to 192 channels even or faster).
constexpr int64_t kPointwiseReduction = 256;

// Output channels from which grad_input's scattered channel vectors reduce
// long enough between two updates of their scratch tile.
constexpr int64_t kScatterMinOutputs = 16;

// What the direct kernels can do for one pass of one shape, with vectors of `lanes` elements.
struct Geometry {
  const Conv2dParams& p;
  ConvPass pass;
  int64_t lanes;
  int64_t element_size;
  Tiles tiles;
  Isa isa;
  CpuVendor vendor;
  // The activations are channels_last: the channel-vector families run in that layout, every other
  // direct family on NCHW copies (a transpose of the operand and of the result).
  bool channels_last;

  // The weight gradient of one group: what grad_weight's direct families keep their sums in.
  int64_t weight_gradient_bytes() const {
    return saturating_product(p.kernel_plane(), p.in_per_group(), p.out_per_group() * element_size);
  }

  // Forward and grad_input: the correlation and the outputs per pixel.
  Correlation correlation() const {
    return pass == ConvPass::Forward ? forward_correlation(p, lanes, true) : grad_input_correlation(p, lanes, true);
  }
  int64_t outs() const { return pass == ConvPass::Forward ? p.out_per_group() : p.in_per_group(); }

  // The shifted planes (planes_first_layer.h) need a plane of at least one vector; grad_weight
  // reads the forward correlation's copies and grad_output in place by whole blocks.
  bool planes_can_run() const {
    const bool grad_weight = pass == ConvPass::GradWeight;
    const Correlation c = grad_weight ? forward_correlation(p, lanes, true) : correlation();
    return c.out_h * c.out_w >= lanes && (!grad_weight || p.out_per_group() % tiles.oc_block == 0);
  }

  // The input vectors (grad_weight_input_vectors.h) need input channels in whole vectors, and stage
  // a sample's whole window region pixel-major, within kPixelStagingBytes.
  bool input_vectors_can_run() const {
    const PaddedPlanes pp(p);
    return pass == ConvPass::GradWeight && p.in_per_group() % lanes == 0 &&
           saturating_product(pp.rows, pp.cols, p.in_per_group()) <= kPixelStagingBytes / element_size;
  }

  // Input vectors win where each band of rows (kPixelBandBytes) reduces over enough pixels between
  // loads and stores of the tile sums, which stay in cache beside the band: stride-1 layers whose
  // planes hold kInputVectorPixels and whose group's dW is at most kInputVectorWeightBytes.
  bool input_vectors_win() const {
    return p.stride_h == 1 && p.stride_w == 1 && p.out_plane() >= kInputVectorPixels &&
           weight_gradient_bytes() <= kInputVectorWeightBytes && input_vectors_can_run();
  }

  // Channel vectors pay where the pixel-vector families would compute over
  // 4/3 of the outputs (flat positions or padded rows: tiny planes), or, with
  // at least two vectors of channels (each broadcast input then feeds two or
  // more FMAs), where the reduction is long. They need whole vectors of channels.
  bool channel_vectors_win(const Correlation& c, int64_t outs) const {
    if (outs % lanes != 0) return false;
    const int64_t pixel_lanes = c.flat ? flat_positions(c, lanes) : c.out_h * round_up(c.out_w, lanes);
    const bool tiny = 4 * c.out_h * c.out_w < 3 * pixel_lanes;
    return tiny || (outs >= 2 * lanes && c.taps() >= kFewTaps);
  }

  // grad_weight's channel vectors pass over the taps once per group of staged samples: they need two
  // samples with their grad_output to fit the staging budget, or, in channels_last with steps of 4 vectors
  // (AVX-512), which read grad_output in place, a sample's staged planes. A weight gradient above
  // kWeightSumsBytes is summed over sets of samples staged for all tasks (driver.h), which fit any sample.
  bool weight_vectors_fit() const {
    if (weight_gradient_bytes() > kWeightSumsBytes) return true;
    const Correlation cv = grad_weight_correlation(p, lanes, true);
    const int64_t budget = kDirectStagingBytes;
    const int64_t cv_planes = saturating_product(p.in_per_group(), cv.staging.rows, cv.staging.cols);
    const int64_t cv_sample = cv_planes > budget ? budget : cv_planes + p.out_plane() * p.out_per_group();
    const bool in_place = channels_last && p.out_per_group() % lanes == 0;
    return 2 * cv_sample * element_size <= budget ||
           (in_place && tiles.cv_vectors >= 4 && cv_planes * element_size <= budget);
  }

  // Beside a GEMM below full speed (isa.h: CPUs not Intel's), grad_weight's channel vectors (NCHW
  // grad_output through a transpose per sample) beat im2col on kernels larger than 1 x 1, strided or not,
  // as they skip the border's taps where im2col multiplies its zero columns: where a group's weight
  // gradient, their sums, stays in L2 (kWeightSumsBytes: the stems, the 64 -> 128 and 128 -> 128 layers of
  // 3 x 3), AVX2's steps of 2 vectors too; and, in AVX-512's steps of 4 vectors, above it, summed in sets
  // of samples (driver.h), where the batch has kWeightSetPixels output pixels to reduce over (256 and 512
  // channels of 3 x 3 on 7 x 7 and 4 x 4 planes of 8 samples; AVX2's steps lose there).
  bool weight_vectors_beat_slow_gemm() const {
    const int64_t bytes = weight_gradient_bytes();
    const bool wide_steps = tiles.cv_vectors >= 4;
    return vendor != CpuVendor::kIntel && isa != Isa::kBaseline && pass == ConvPass::GradWeight &&
           p.out_per_group() % lanes == 0 && p.kernel_plane() > 1 &&
           (bytes <= kWeightSumsBytes ||
            (wide_steps && saturating_product(p.batch, p.out_plane(), 1) >= kWeightSetPixels));
  }

  // grad_input: the scattered channel vectors (channel_vectors_scatter.h) keep a scratch tile of
  // the padded input plane for a block of input channels within kScatterTileBytes.
  bool scatter_tile_fits() const {
    const PaddedPlanes padded(p);
    const int64_t plane = saturating_product(padded.rows, padded.cols, 1);
    return plane < kDirectStagingBytes &&
           saturating_product(plane + lanes, tiles.cv_vectors, tiles.vec_bytes) <= kScatterTileBytes;
  }

  // Whole vectors of input channels, a gradient to scatter, and a tile that fits.
  bool scatter_can_run() const { return p.in_per_group() % lanes == 0 && p.out_plane() > 0 && scatter_tile_fits(); }

  // They multiply out_plane x taps real gradient values per input channel, the correlation
  // in_plane x taps values of the gradient padded by kernel - 1 (and spread out by the stride):
  // they win where at least a tenth of those are zeros, with a reduction (output channels)
  // long enough to pay for adding each step's sums into the tile.
  bool scatter_wins() const {
    return scatter_can_run() && p.out_per_group() >= kScatterMinOutputs && 10 * p.out_plane() <= 9 * p.in_plane();
  }

  Family correlation_family() const {
    // Pointwise layers in channels_last: their own products (pointwise.h) but for forward passes of long
    // reductions, which the channel vectors block for the cache (where they can run: whole vectors of outputs).
    if (pointwise_can_run() && (pass == ConvPass::GradInput || p.in_per_group() <= kPointwiseReduction ||
                                outs() % lanes != 0))
      return Family::kPointwise;
    if (pass == ConvPass::GradInput && scatter_wins()) return Family::kChannelVectorsScatter;
    const Correlation c = correlation();
    // channels_last: wherever they can run, as the transposes cost more than they lose (first layers:
    // the output is the layer's largest tensor).
    if (channels_last && outs() % lanes == 0) return Family::kChannelVectors;
    // Shifted planes for few taps, and for images (fewer than kImageChannels channels) whatever the
    // kernel: they waste no lane on any plane and read no strided input (ResNet's 7 x 7 stride-2
    // stem: 1.1 - 1.3x channel vectors).
    if ((c.taps() < kFewTaps || c.channels < kImageChannels) && planes_can_run()) return Family::kPlanesFirstLayer;
    if (channel_vectors_win(c, outs())) return Family::kChannelVectors;
    return c.flat ? Family::kPixelVectorsFlat : Family::kPixelVectorsBlock;
  }

  // Pointwise grad_weight (grad_weight_pointwise.h) reads channels_last operands in place (a strided
  // 1 x 1 layer's input pixels gathered a band at a time), and NCHW ones of stride 1 with one side
  // transposed, with at least one vector of channels on one side.
  bool pointwise_weight_can_run() const {
    return pass == ConvPass::GradWeight && (channels_last ? is_one_by_one(p) : is_pointwise(p)) &&
           std::max(p.in_per_group(), p.out_per_group()) >= lanes;
  }

  // Pointwise forward and grad_input (pointwise.h) read channels_last operands in place, with at least one
  // vector of outputs; also of strided 1 x 1 layers, whose input pixels are gathered a block at a time
  // (forward), or whose input gradient is scattered a block at a time, zeros between (grad_input).
  bool pointwise_can_run() const {
    return pass != ConvPass::GradWeight && channels_last && is_one_by_one(p) && outs() >= lanes;
  }

  Family grad_weight_family() const {
    if (pointwise_weight_can_run()) return Family::kGradWeightPointwise;
    if (input_vectors_win()) return Family::kGradWeightInputVectors;
    const int64_t cout = p.out_per_group();
    const bool unit_stride = p.stride_h == 1 && p.stride_w == 1;
    const Correlation rows = grad_weight_correlation(p, lanes, false);
    const Correlation flat = grad_weight_correlation(p, lanes, unit_stride);
    // Channel vectors where they win for the better of the pixel layouts (channels_last: wherever they
    // can run, as for the correlation), and their samples fit the staging (a layer with large planes
    // loses), or they beat a slower GEMM. In channels_last they read grad_output in place, where the
    // other families transpose both operands or leave the pass to im2col.
    const bool win = channel_vectors_win(rows, cout) && (!flat.flat || channel_vectors_win(flat, cout));
    const bool in_place = channels_last && cout % lanes == 0;
    if ((win || in_place) && (weight_vectors_fit() || weight_vectors_beat_slow_gemm()))
      return Family::kGradWeightChannelVectors;
    // The strided layers and long reductions that the families below lose to im2col, beside a slower GEMM;
    // strided first layers too, where the shifted planes below lost to them (MobileNetV2's stem at
    // AVX-512, benchmarks/RESULTS.md, session 28).
    if (weight_vectors_beat_slow_gemm() && (!unit_stride || p.col_rows() >= kWideReduction))
      return Family::kGradWeightChannelVectors;
    // Shifted planes where a step holds 8 channels x 3 taps (AVX-512's 32 registers), or rows are
    // narrower than a vector; with 16 registers (4 x 3) grad_output read in place along rows measured
    // 1.1 - 1.2x faster on 3-channel first layers (benchmarks/RESULTS.md, session 12). Strided first
    // layers too beside oneMKL's GEMM: their grad_output, transposed for the channel vectors, is as
    // large as their input.
    if (rows.taps() < kFewTaps && planes_can_run() && (tiles.oc_block >= 8 || p.out_w < lanes))
      return Family::kPlanesFirstLayer;
    // grad_output is copied into rows padded to whole vectors (so no load crosses a row) and
    // channels padded to whole blocks, except where there is little work per element to hide the
    // copy behind: few input channels (16-register ISAs, where the shifted planes do not run),
    // rows of at least one vector, whole blocks.
    if (p.out_w >= lanes && rows.taps() < kFewTaps && cout % tiles.oc_block == 0)
      return Family::kGradWeightColumnsInPlace;
    // Flat where it needs fewer vectors than rows padded to whole vectors.
    if (flat.flat && flat_positions(flat, lanes) < p.out_h * round_up(p.out_w, lanes))
      return Family::kGradWeightColumnsFlat;
    return Family::kGradWeightColumns;
  }

  // Depthwise layers have kernels of their own for every pass, with no lane
  // computing a channel the group does not have.
  Family family() const {
    if (is_depthwise(p)) return Family::kDepthwise;
    return pass == ConvPass::GradWeight ? grad_weight_family() : correlation_family();
  }

  // Whether `family` (of this pass) can run this shape at all.
  bool can_run(Family family) const {
    switch (family) {
      case Family::kPlanesFirstLayer:
        return planes_can_run();
      case Family::kPixelVectorsFlat:
        return correlation().flat;
      case Family::kPixelVectorsBlock:
        return true;
      case Family::kChannelVectors:
        return outs() % lanes == 0;
      case Family::kChannelVectorsScatter:
        return pass == ConvPass::GradInput && scatter_can_run();
      case Family::kGradWeightColumnsInPlace:
        return p.out_w >= lanes && p.out_per_group() % tiles.oc_block == 0;
      case Family::kGradWeightColumns:
        return true;
      case Family::kGradWeightColumnsFlat:
        return grad_weight_correlation(p, lanes, p.stride_h == 1 && p.stride_w == 1).flat;
      case Family::kGradWeightChannelVectors:
        return p.out_per_group() % lanes == 0;
      case Family::kGradWeightInputVectors:
        return input_vectors_can_run();
      case Family::kGradWeightPointwise:
        return pointwise_weight_can_run();
      case Family::kPointwise:
        return pointwise_can_run();
      case Family::kDepthwise:
        return is_depthwise(p);
      case Family::kIm2col:
        break;
    }
    return false;
  }
};

// Which passes a family has kernels for: forward and grad_input (a correlation), grad_weight, or all.
bool runs_grad_weight(Family f) {
  return f == Family::kGradWeightColumnsInPlace || f == Family::kGradWeightColumns ||
         f == Family::kGradWeightColumnsFlat || f == Family::kGradWeightChannelVectors ||
         f == Family::kGradWeightInputVectors || f == Family::kGradWeightPointwise || f == Family::kDepthwise ||
         f == Family::kPlanesFirstLayer;
}
bool runs_correlation(Family f) {
  return f == Family::kDepthwise || f == Family::kPlanesFirstLayer || !runs_grad_weight(f);
}

// Reductions (multiply-adds per output) from which the portable kernels, with
// 16-byte vectors and no FMA, lose backward passes to im2col + MKL's
// cache-blocked GEMM (the seed layers with 256 or more: 1.1 - 1.9x).
constexpr int64_t kLongReduction = 4 * kFewTaps;
// The same for AVX2's grad_input, on reductions this long (the large layer: 1.15x).
constexpr int64_t kVeryLongReduction = 16 * kFewTaps;

// Output channels per group from which strided layers' grad_weight, and the
// forward of strided 1 x 1 kernels (ResNet-18's shortcuts), run im2col even
// where the direct kernels would use channel vectors.
constexpr int64_t kWideLayer = 64;
// Output planes from which strided layers with few input channels that the
// direct kernels run with vectors over pixels run im2col (MobileNetV2's 3 x 3
// stride-2 stem on 112 x 112 outputs: 0.36 -> 0.65 at AVX-512, before it ran
// over shifted planes; 16 x 16 outputs stay direct).
constexpr int64_t kLargePlane = 1024;

// Output planes below this many pixels: grad_input runs im2col.
constexpr int64_t kTinyPlane = 16;

// Reductions (multiply-adds per output) from which im2col + MKL's GEMM wins
// grad_weight and strided layers on every ISA: 256 channels of 3 x 3 taps and up.
constexpr int64_t kLargeReduction = 2048;
// The same for stride-1 forward and grad_input that channel vectors run
// (blocked for the cache, channel_vector_blocking): 512 channels of 3 x 3.
constexpr int64_t kBlockedReduction = 4096;
// Reductions up to which AVX-512's forward channel vectors of wide strided
// layers beat im2col (ResNet-18's 64 -> 128 stride-2 3 x 3; its 128 -> 256
// one is even).
constexpr int64_t kStridedReduction = 1024;

// Output planes below this many pixels: NCHW channel vectors of stride-1 layers
// stage their input pixel-major (pixel_major_staging). AVX-512: ResNet-18's and
// VGG-11's 512-channel 4 x 4 and 7 x 7 layers gained; 8 x 8 and larger planes,
// and strided layers (whose staging gathers), did not move or lost. AVX2 (2
// vectors of outputs per step): 128 - 512-channel layers on 8 x 8 and 16 x 16
// planes gained too; 28 x 28 and larger did not move.
constexpr int64_t kPixelMajorPlane = 64;
constexpr int64_t kAvx2PixelMajorPlane = 257;

// Input channels from which a channels_last layer's columns are built from
// the channels_last input: a copy of this many values per tap. Fewer are
// copied faster from NCHW rows, the input being small (nhwc_columns).
constexpr int64_t kNhwcMinChannels = 8;

// The `auto` rule for a pass, given the direct family the plan would run and
// the geometry it was chosen for (the ISA whose kernels would run it, the
// CPU's vendor):
// - pointwise layers: im2col, but in channels_last off Intel's CPUs with AVX2
//   and AVX-512: direct for the pointwise families (forward and grad_input in
//   `pointwise`; grad_weight in `grad_weight_pointwise`; strided 1 x 1 layers
//   too, is_one_by_one: forward and grad_input, and with AVX-512 grad_weight),
//   and for forward passes that the channel vectors run in place (long
//   reductions, whole vectors of outputs) over more than one vector; in NCHW
//   off Intel's CPUs: grad_weight in `grad_weight_pointwise` (AVX2, AVX-512),
//   and with AVX-512 direct for grad_input with at least one vector of
//   outputs, forward with more than one; with AVX2 for forward and grad_input
//   over a reduction of at most 4 vectors into more than 4 vectors of outputs.
// - depthwise layers: direct.
// - channels_last, groups 1, at least kNhwcMinChannels input channels: im2col,
//   unless the direct family runs channels_last in place (runs_channels_last).
// - reductions of at least kLargeReduction: im2col; of at least
//   kBlockedReduction for AVX-512's stride-1 channel vectors (forward,
//   grad_input); never for AVX-512's channel vectors in channels_last
//   (forward, grad_input, scattered or not), which run in place. On CPUs
//   where oneMKL's GEMM runs below full speed (not Intel's): never for
//   AVX-512's channel vectors, forward or grad_input, scattered or not, nor
//   for the grad_weight channel vectors where their sums stay in L2 (AVX2's
//   too) or, AVX-512's, the batch has enough pixels
//   (weight_vectors_beat_slow_gemm); nor, there, for
//   AVX2's (unscattered) channel vectors over a pixel-major staging
//   (channels_last; NCHW's small stride-1 planes, pixel_major_staging) on
//   kernels larger than 1 x 1, forward (in channels_last strided too) or
//   grad_input.
// - forward and grad_weight: direct, except for strided layers with at least
//   8 input channels per group that the direct kernels run with vectors over
//   pixels: they read the input with strided loads, slower than im2col's
//   contiguous GEMM. With vectors over output channels direct is faster:
//   AVX-512's forward at any width but for 1 x 1 kernels (one GEMM): NCHW
//   for reductions below kStridedReduction, channels_last and where oneMKL's
//   GEMM runs below full speed at any; otherwise
//   up to kWideLayer output channels per group. With fewer input channels, from
//   kLargePlane output pixels on, but over shifted planes (stems), which
//   gather the strided input once.
//   grad_weight of strided first layers (fewer than 8 input channels: the
//   7 x 7 and 3 x 3 stride-2 stems) is im2col too, its batch cut into chunks,
//   but where oneMKL's GEMM runs below full speed for the shifted planes.
//   Neither strided rule holds for AVX-512's channel vectors in channels_last
//   grad_weight of kernels larger than 1 x 1, which read grad_output in place,
//   nor, where oneMKL's GEMM runs below full speed, for the grad_weight
//   channel vectors that beat it (weight_vectors_beat_slow_gemm).
// - grad_input: direct where the plan scatters it (channel_vectors_scatter:
//   strided and unpadded layers, only real gradient values multiplied),
//   but for 1 x 1 kernels, whose im2col is one GEMM with no zeros either
//   (but in NCHW beside a GEMM below full speed, with AVX-512); otherwise
//   direct when C_in/groups >= 8, the stride is 1 and the output
//   plane has at least kTinyPlane pixels. Its kernels
//   compute blocks of input channels, which first layers (1 or 3 input
//   channels) and depthwise layers would mostly waste; with a stride they
//   correlate a gradient spread out with zeros (3 of 4 taps wasted at stride
//   2), while col2im scatters only the real ones.
// - grad_weight over pixel rows (the grad_weight_columns families) with a
//   reduction of kWideReduction or more: im2col; with 16 vector registers
//   (AVX2, portable) over padded rows (grad_weight_columns: 4 channels per
//   step) from kFewTaps on.
// - portable: grad_input with a long reduction (C_out/groups x taps), and
//   forward and grad_weight with a long one over planes of at least 64
//   outputs: im2col;
//   AVX2: grad_input with a very long one.
// The measurements behind each rule are in benchmarks/RESULTS.md.
ConvAlgo auto_algo(const Geometry& g, Family family) {
  const Conv2dParams& p = g.p;
  const ConvPass pass = g.pass;
  const Isa isa = g.isa;
  const bool channels_last = g.channels_last;
  const bool gemm_full_speed = g.vendor == CpuVendor::kIntel;
  // Pointwise layers are one GEMM with no column copy (conv2d_im2col_kernel.cpp); the direct
  // kernels' tiles reuse each input load across a kernel window, and 1 x 1 has none to reuse. But
  // beside a GEMM below full speed, AVX-512's direct families beat the GEMM's per-sample calls on NCHW
  // pixel rows (MobileNetV2's 7 x 7 and 14 x 14 layers most).
  // Beside a GEMM below full speed, the channel vectors in channels_last (AVX2, AVX-512) reuse each
  // broadcast input across their vectors of outputs as a GEMM's microkernel does, reading a pixel's
  // channels in place: they run the forward passes of long reductions (kPointwiseReduction) that the
  // plan gives them (MobileNetV2's 384 - 960-channel layers on AVX2: 1.0 - 1.1 against im2col's 0.7 -
  // 0.8 of torch's time), but for a reduction of one vector, whose steps are mostly their stores.
  // The pointwise families read the pixel-major operands in place, where im2col's GEMM packs them (and,
  // for a strided 1 x 1 layer, gathers its columns first); NCHW grad_weight transposes only the operand
  // with fewer channels, where im2col's GEMMs, per block of samples, pack both. AVX2's grad_weight of
  // strided 1 x 1 layers (ResNet's shortcuts) only tied.
  if (family == Family::kGradWeightPointwise || family == Family::kPointwise) {
    const bool strided_avx2 = isa == Isa::kAvx2 && pass == ConvPass::GradWeight && !is_pointwise(p);
    return !gemm_full_speed && isa != Isa::kBaseline && !strided_avx2 ? ConvAlgo::Direct : ConvAlgo::Im2col;
  }
  if (is_pointwise(p)) {
    const int64_t reduction = pass == ConvPass::Forward ? p.in_per_group() : p.out_per_group();
    const bool in_place = channels_last && isa != Isa::kBaseline && family == Family::kChannelVectors;
    // NCHW, AVX-512: the direct families (channel vectors, shifted planes, pixel vectors) against the
    // per-sample GEMMs on pixel rows: grad_input where the outputs fill a vector, forward where they
    // fill more than one (one vector of outputs over 112 x 112 lost).
    const int64_t min_outs = pass == ConvPass::Forward ? g.lanes + 1 : g.lanes;
    const bool nchw_avx512 = !channels_last && isa == Isa::kAvx512 && pass != ConvPass::GradWeight &&
                             g.outs() >= min_outs;
    // NCHW, AVX2: only where a reduction of at most 4 vectors feeds more than 4 vectors of outputs
    // (MobileNetV2's expansions forward, its projections' grad_input), GEMMs that are mostly their
    // stores; on longer reductions, and into fewer outputs, the GEMM's cache blocking ties or wins.
    const bool nchw_avx2 = !channels_last && isa == Isa::kAvx2 && pass != ConvPass::GradWeight &&
                           reduction <= 4 * g.lanes && g.outs() > 4 * g.lanes;
    return !gemm_full_speed && ((in_place && reduction > g.lanes) || nchw_avx512 || nchw_avx2) ? ConvAlgo::Direct
                                                                                               : ConvAlgo::Im2col;
  }
  if (family == Family::kDepthwise) return ConvAlgo::Direct;
  // channels_last: im2col's GEMMs read and write the model's layout where its columns come from
  // the channels_last input (nhwc_columns); the direct families without channels_last kernels
  // would transpose every operand and result. First layers (few input channels) stay direct:
  // their columns are copied a few values per tap, and their outputs would be written through
  // transposed GEMMs.
  if (channels_last && nhwc_columns(p) && !runs_channels_last(family, p)) return ConvAlgo::Im2col;
  // Large layers: the GEMM's cache blocking wins over the direct kernels' register tiles.
  const bool strided = p.stride_h > 1 || p.stride_w > 1;
  const int64_t reduction = pass == ConvPass::GradInput ? p.out_per_group() * p.kernel_plane() : p.col_rows();
  // AVX-512's channel vectors (4 vectors x 6 pixels per step); AVX2's (2 x 6) measured even with
  // im2col on 256-channel layers and slower on wider ones.
  const bool wide_channel_vectors = family == Family::kChannelVectors && isa == Isa::kAvx512;
  const bool blocked = wide_channel_vectors && !strided;
  // AVX-512's channel vectors, forward and grad_input, scattered or not, beat im2col's GEMM at any
  // reduction, wide and strided layers too: in channels_last, where they read the weights as a
  // channels_last model holds them and transpose nothing but the staged input, blocked for the cache;
  // and where oneMKL's GEMM runs below full speed (isa.h: CPUs not Intel's), as they skip the border's
  // taps (channel_vectors.h) where im2col multiplies its zero columns.
  const bool avx512_vectors = isa == Isa::kAvx512 && pass != ConvPass::GradWeight &&
                              (family == Family::kChannelVectors || family == Family::kChannelVectorsScatter);
  const bool slow_gemm_vectors = !gemm_full_speed && avx512_vectors;
  // AVX2's channel vectors over a pixel-major staging (pixel_major_staging: channels_last, and NCHW's
  // small stride-1 planes), beside a GEMM below full speed: they beat im2col on kernels larger than
  // 1 x 1 at any reduction, forward (in channels_last strided too) and grad_input; the scattered ones
  // still lose on wide layers.
  const bool avx2_pixel_major_vectors = pixel_major_staging(p, pass, isa, channels_last) && !gemm_full_speed &&
                                        isa == Isa::kAvx2 && family == Family::kChannelVectors &&
                                        p.kernel_plane() > 1;
  // grad_weight's channel vectors beside a slower GEMM, where they beat it
  // (Geometry::weight_vectors_beat_slow_gemm).
  const bool slow_gemm_weight_vectors =
      family == Family::kGradWeightChannelVectors && g.weight_vectors_beat_slow_gemm();
  const bool direct_vectors = (channels_last && avx512_vectors) || avx2_pixel_major_vectors || slow_gemm_vectors ||
                              slow_gemm_weight_vectors;
  if (reduction >= (blocked ? kBlockedReduction : kLargeReduction) && !direct_vectors) return ConvAlgo::Im2col;
  // Their grad_weight reads grad_output in place too, strided or not (stems included; RESULTS.md, session 16),
  // but for 1 x 1 kernels (shortcuts), whose im2col is a GEMM over the strided input's gathered pixels alone;
  // beside a slower GEMM, NCHW's too where they beat it.
  const bool direct_weight_vectors =
      slow_gemm_weight_vectors ||
      (family == Family::kGradWeightChannelVectors && channels_last && isa == Isa::kAvx512 && p.kernel_plane() > 1);
  switch (pass) {
    case ConvPass::Forward:
    case ConvPass::GradWeight: {
      const bool channel_vectors = family == Family::kChannelVectors || family == Family::kGradWeightChannelVectors;
      // Forward channel vectors of wide strided layers stay direct but for 1 x 1 kernels (shortcuts):
      // NCHW below kStridedReduction, channels_last in place and beside a slower GEMM at any reduction.
      const bool wide_direct = (wide_channel_vectors && p.kernel_plane() > 1 &&
                                (direct_vectors || p.col_rows() < kStridedReduction)) ||
                               avx2_pixel_major_vectors;
      if (strided && p.in_per_group() >= 8 && !direct_weight_vectors &&
          (!channel_vectors || (p.out_per_group() >= kWideLayer && !wide_direct)))
        return ConvAlgo::Im2col;
      // Pixel vectors over strided rows gather each tap's inputs with strided loads; the shifted planes
      // gather them once, into their copies.
      const bool strided_loads = !channel_vectors && family != Family::kPlanesFirstLayer;
      if (strided && strided_loads && p.out_plane() >= kLargePlane) return ConvAlgo::Im2col;
      if (isa == Isa::kBaseline && p.col_rows() >= kLongReduction && p.out_plane() >= 64) return ConvAlgo::Im2col;
      if (pass == ConvPass::Forward) return ConvAlgo::Direct;
      // Beside a slower GEMM the shifted planes win there (MobileNetV2's stem).
      const bool slow_gemm_planes = family == Family::kPlanesFirstLayer && !gemm_full_speed;
      if (strided && p.in_per_group() < 8 && !direct_weight_vectors && !slow_gemm_planes) return ConvAlgo::Im2col;
      if (family == Family::kGradWeightColumns && p.col_rows() >= (isa == Isa::kAvx512 ? kWideReduction : kFewTaps))
        return ConvAlgo::Im2col;
      if (family == Family::kGradWeightColumnsFlat && p.col_rows() >= kWideReduction) return ConvAlgo::Im2col;
      return ConvAlgo::Direct;
    }
    case ConvPass::GradInput:
      if (!avx2_pixel_major_vectors &&
          p.out_per_group() * p.kernel_plane() >= (isa == Isa::kBaseline  ? kLongReduction
                                                   : isa == Isa::kAvx2 ? kVeryLongReduction
                                                                       : INT64_MAX))
        return ConvAlgo::Im2col;
      // A gradient of fewer than kTinyPlane pixels padded out to the input's size is mostly zeros to
      // the direct kernels; col2im adds only the real values (lenet.conv3's 3 x 3: 1.1 - 1.6x).
      // A 1 x 1 kernel's columns hold only real gradient values too: then im2col's GEMM is the whole pass.
      // Beside a slower GEMM, NCHW's scatter beats that GEMM on 1 x 1 kernels too (ResNet's shortcuts).
      if (family == Family::kChannelVectorsScatter)
        return p.kernel_plane() > 1 || (slow_gemm_vectors && !channels_last) ? ConvAlgo::Direct : ConvAlgo::Im2col;
      if (p.out_plane() < kTinyPlane) return ConvAlgo::Im2col;
      return p.in_per_group() >= 8 && !strided ? ConvAlgo::Direct : ConvAlgo::Im2col;
  }
  return ConvAlgo::Direct;
}

// CNNEXT_CONV_PLAN: comma-separated `algo=direct|im2col` and `family=<name>`
// (one forward/grad_input family and one grad_weight family at most).
struct Forced {
  std::optional<ConvAlgo> algo;
  std::optional<Family> correlation_family, grad_weight_family;
  std::string text;
};

Forced parse_forced() {
  Forced forced;
  const char* env = std::getenv("CNNEXT_CONV_PLAN");
  if (env == nullptr || *env == '\0') return forced;
  forced.text = env;
  std::stringstream items(forced.text);
  std::string item;
  while (std::getline(items, item, ',')) {
    if (item.empty()) continue;
    const auto eq = item.find('=');
    const std::string key = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (key == "algo" && (value == "direct" || value == "im2col")) {
      forced.algo = value == "direct" ? ConvAlgo::Direct : ConvAlgo::Im2col;
      continue;
    }
    bool known = false;
    for (const Family f : kAllFamilies) {
      if (key == "family" && f != Family::kIm2col && value == family_name(f)) {
        if (runs_grad_weight(f)) forced.grad_weight_family = f;
        if (runs_correlation(f)) forced.correlation_family = f;
        known = true;
      }
    }
    if (!known) {
      std::string families;
      for (const Family f : kAllFamilies)
        if (f != Family::kIm2col) families += std::string(families.empty() ? "" : ", ") + family_name(f);
      TORCH_CHECK_VALUE(false, "CNNEXT_CONV_PLAN: unknown entry '", item, "' in '", forced.text,
                        "'; expected comma-separated algo=direct|im2col and family=<one of ", families, ">");
    }
  }
  return forced;
}

std::atomic<int> last_run[3] = {};

}  // namespace

bool nhwc_columns(const Conv2dParams& p) { return p.groups == 1 && p.in_per_group() >= kNhwcMinChannels; }

bool pixel_major_staging(const Conv2dParams& p, ConvPass pass, Isa isa, bool channels_last) {
  const int64_t plane = pass == ConvPass::Forward ? p.out_plane() : p.in_plane();
  const int64_t below = isa == Isa::kAvx2 ? kAvx2PixelMajorPlane : kPixelMajorPlane;
  return channels_last || (plane < below && p.stride_h == 1 && p.stride_w == 1);
}

bool runs_channels_last(Family family, const Conv2dParams& p) {
  switch (family) {
    case Family::kChannelVectors:
    case Family::kChannelVectorsScatter:
    case Family::kGradWeightChannelVectors:
    case Family::kGradWeightInputVectors:
    case Family::kGradWeightPointwise:
    case Family::kPointwise:
      return true;
    case Family::kDepthwise:
      return p.in_per_group() == 1 && p.out_per_group() == 1;
    default:
      return false;
  }
}

bool writes_channels_last_weights(const ConvPlan& plan) {
  return plan.channels_last &&
         (plan.family == Family::kGradWeightChannelVectors || plan.family == Family::kGradWeightInputVectors);
}

const char* family_name(Family family) {
  switch (family) {
    case Family::kIm2col:
      return "im2col";
    case Family::kPlanesFirstLayer:
      return "planes_first_layer";
    case Family::kPixelVectorsFlat:
      return "pixel_vectors_flat";
    case Family::kPixelVectorsBlock:
      return "pixel_vectors_block";
    case Family::kChannelVectors:
      return "channel_vectors";
    case Family::kChannelVectorsScatter:
      return "channel_vectors_scatter";
    case Family::kGradWeightColumnsInPlace:
      return "grad_weight_columns_in_place";
    case Family::kGradWeightColumns:
      return "grad_weight_columns";
    case Family::kGradWeightColumnsFlat:
      return "grad_weight_columns_flat";
    case Family::kGradWeightChannelVectors:
      return "grad_weight_channel_vectors";
    case Family::kGradWeightInputVectors:
      return "grad_weight_input_vectors";
    case Family::kGradWeightPointwise:
      return "grad_weight_pointwise";
    case Family::kPointwise:
      return "pointwise";
    case Family::kDepthwise:
      return "depthwise";
  }
  return "?";
}

const char* pass_name(ConvPass pass) {
  switch (pass) {
    case ConvPass::Forward:
      return "forward";
    case ConvPass::GradInput:
      return "grad_input";
    case ConvPass::GradWeight:
      break;
  }
  return "grad_weight";
}

ConvPlan conv2d_plan(const Conv2dParams& p, ConvPass pass, int64_t element_size, Isa isa, CpuVendor vendor,
                     std::optional<ConvAlgo> algo, bool channels_last) {
  const Tiles tiles = tiles_for(isa);
  const Geometry geometry{p, pass, tiles.lanes(element_size), element_size, tiles, isa, vendor, channels_last};
  const Forced forced = parse_forced();
  ConvPlan plan{ConvAlgo::Direct, geometry.family(), isa, vendor, tiles, false, false, forced.text};
  const std::optional<Family> forced_family =
      pass == ConvPass::GradWeight ? forced.grad_weight_family : forced.correlation_family;
  if (forced_family) {
    if (geometry.can_run(*forced_family)) {
      plan.family = *forced_family;
    } else {
      plan.forced += std::string(" (") + family_name(*forced_family) + " cannot run this " + pass_name(pass) +
                     ": " + family_name(plan.family) + " runs)";
    }
  }
  // An explicit algo wins; then a forced one; a forced family means direct; else the auto rule.
  plan.algo = algo ? *algo : forced.algo ? *forced.algo : forced_family ? ConvAlgo::Direct
                                                                          : auto_algo(geometry, plan.family);
  if (plan.algo == ConvAlgo::Im2col) plan.family = Family::kIm2col;
  plan.channels_last = channels_last && plan.algo == ConvAlgo::Direct && runs_channels_last(plan.family, p);
  plan.pixel_major = plan.family == Family::kChannelVectors && pixel_major_staging(p, pass, isa, plan.channels_last);
  return plan;
}

Family last_family_run(ConvPass pass) {
  return static_cast<Family>(last_run[static_cast<int>(pass)].load(std::memory_order_relaxed));
}

void note_family_run(ConvPass pass, Family family) {
  last_run[static_cast<int>(pass)].store(static_cast<int>(family), std::memory_order_relaxed);
}

}  // namespace cpu
}  // namespace cnnext
