// The one place that decides how a CPU convolution pass runs: which
// algorithm (direct or im2col + GEMM), which direct kernel family and with
// which tiles, per pass, element type and ISA. conv2d.cpp's algo="auto" and
// the direct driver (conv2d_direct/driver.h) both read it, so what `auto`
// predicts is what runs. Queryable from Python (cnnext._ops.conv2d_plan) and
// forceable with the CNNEXT_CONV_PLAN environment variable (see README.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "../conv2d.h"
#include "../params.h"
#include "conv2d_direct/tiles.h"
#include "isa.h"

namespace cnnext {
namespace cpu {

enum class ConvPass { Forward, GradInput, GradWeight };

// The direct kernel families (one header each in conv2d_direct/), and im2col.
enum class Family {
  kIm2col,                    // im2col + GEMM (conv2d_im2col_kernel.cpp)
  kPlanesFirstLayer,          // planes_first_layer.h: pixel vectors over shifted planes, few taps, stride 1
  kPixelVectorsFlat,          // pixel_vectors_flat.h: pixel vectors over flattened rows, stride 1
  kPixelVectorsBlock,         // pixel_vectors_block.h: pixel vectors per row, any stride
  kChannelVectors,            // channel_vectors.h: vectors over output channels
  kChannelVectorsScatter,     // channel_vectors_scatter.h: grad_input, vectors over input channels
  kGradWeightColumnsInPlace,  // grad_weight_columns.h, grad_output read in place
  kGradWeightColumns,         // grad_weight_columns.h, grad_output copied into padded rows
  kGradWeightColumnsFlat,     // grad_weight_columns.h over flattened rows (stride 1, finite input)
  kGradWeightChannelVectors,  // grad_weight_channel_vectors.h
  kGradWeightInputVectors,    // grad_weight_input_vectors.h
  kGradWeightPointwise,       // grad_weight_pointwise.h: 1 x 1 kernels, any stride in channels_last, stride 1 in NCHW
  kPointwise,                 // pointwise.h: forward and grad_input of 1 x 1 kernels, any stride, channels_last
  kDepthwise,                 // depthwise.h: every pass of a depthwise layer (params.h, is_depthwise)
};

struct ConvPlan {
  ConvAlgo algo;
  Family family;  // kIm2col when algo is im2col
  Isa isa;        // whose kernels run (conv2d_direct/variants.h)
  CpuVendor vendor;  // whose CPU the rule was chosen for (auto_algo)
  Tiles tiles;
  // The activations (input, output, their gradients) are channels_last and the
  // family runs on them in place (runs_channels_last); forward and grad_input
  // read the weights channels_last, grad_weight writes them as
  // writes_channels_last_weights says.
  bool channels_last;
  // The channel vectors' forward and grad_input stage their input pixel-major,
  // a pixel's channels side by side (pixel_major_staging).
  bool pixel_major;
  // What CNNEXT_CONV_PLAN forced, and whether a forced family could not run
  // this shape (then the planned family runs); empty when nothing was forced.
  std::string forced;
};

// The plan of `pass` for the convolution `p`, computed in elements of
// `element_size` bytes (4 or 8: float16 and bfloat16 run in float32), with
// the kernels of `isa`, on a CPU of `vendor` (which decides where im2col's
// GEMM wins). `algo` is the caller's explicit choice (nullopt for
// "auto"); CNNEXT_CONV_PLAN may force the algorithm of an "auto" call and the
// family of any direct one. `channels_last`: the operands are channels_last
// (then direct families with channels_last kernels and groups-1 layers under
// im2col compute in that layout). Throws c10::ValueError for a malformed
// CNNEXT_CONV_PLAN.
ConvPlan conv2d_plan(const Conv2dParams& p, ConvPass pass, int64_t element_size, Isa isa, CpuVendor vendor,
                     std::optional<ConvAlgo> algo, bool channels_last = false);

// Whether the direct `family` runs `p` on channels_last activations in place:
// the channel-vector families (their staging reads channels_last pixels, their
// accumulators hold channels side by side), the pointwise families (which run
// in no other layout), and depthwise layers with one output per group
// (conv2d_direct/depthwise_nhwc.h).
bool runs_channels_last(Family family, const Conv2dParams& p);

// Whether the direct grad_weight of `plan` writes the weight gradient
// channels_last, as a channels_last model holds its weights: the channel and
// input vectors on channels_last activations. The other families write it NCHW,
// which for 1 x 1 and depthwise kernels is the same layout.
bool writes_channels_last_weights(const ConvPlan& plan);

// Whether a groups-1 layer of a channels_last model that runs im2col builds
// its columns from the channels_last input (conv2d_im2col_nhwc_kernel.cpp);
// otherwise (few input channels: first layers) from an NCHW copy of it, its
// output and grad_output staying channels_last (conv2d_im2col_kernel.cpp).
bool nhwc_columns(const Conv2dParams& p);

// Whether the channel vectors' forward or grad_input (`pass`) of `p`, run with
// `isa`'s kernels, stage its input pixel-major: always on channels_last
// activations (stage_pixels copies whole pixels), and on NCHW ones of stride-1
// layers where the pass's output planes are small for the ISA
// (kPixelMajorPlane). There a step's consecutive taps (kernel-major: one input
// channel after the other) broadcast from one cache line per pixel instead of
// one plane each, for a transpose of the input per sample.
bool pixel_major_staging(const Conv2dParams& p, ConvPass pass, Isa isa, bool channels_last);

const char* family_name(Family family);
const char* pass_name(ConvPass pass);

// The family the direct kernels last ran for `pass` (in any thread), for tests
// that check the plan against what runs; kIm2col before any direct run.
Family last_family_run(ConvPass pass);
void note_family_run(ConvPass pass, Family family);

}  // namespace cpu
}  // namespace cnnext
