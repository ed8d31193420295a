// conv2d, direct algorithm: forward, grad_input, grad_weight, and grad_bias.
//
// Forward and grad_input share one scheme. A block owns a spatial tile of
// its result (output pixels for forward, input pixels for grad_input) and a
// tile of channels of the same group; each thread owns one pixel and
// kChannelsPerThread channels, accumulated in registers. The reduction runs
// over the other side's channels in chunks: per chunk the block stages in
// shared memory the window's operand for the whole tile (an input patch, or
// a grad_output patch) and the matching weights, so every global element is
// read once per block instead of once per tap and channel.
//
// grad_weight is a reduction over N x OH x OW for each weight element. A
// block owns a weight tile (co_tile x ci_tile x KH x KW, a few elements per
// thread in registers) and a slice of the (n, output tile) steps; it stages
// grad_output and the input patch of each step in shared memory. Slices
// write partial sums to a workspace, summed afterwards in a fixed order by a
// second kernel: no atomics, bitwise reproducible on a given device.
//
// Geometries whose tiles cannot fit in shared memory (huge kernels or
// dilations), or whose sizes overflow 32-bit tile arithmetic, use untiled
// "generic" kernels of the same semantics.
#include "common.cuh"

namespace cnnext {
namespace cuda {
namespace {

using namespace detail;

constexpr int kMaxThreads = 256;
// Dynamic shared memory a kernel may use without cudaFuncSetAttribute.
constexpr int64_t kSmemBudget = 48 * 1024;
// Channels a thread accumulates for its pixel: each staged window value is
// then reused kChannelsPerThread times from a register.
constexpr int kChannelsPerThread = 4;
// Weight elements a thread owns in the tiled grad_weight kernel.
constexpr int kWeightsPerThread = 8;
// Spatial sizes must stay below this for the tiled kernels' int arithmetic
// (sums of a few such values must not overflow).
constexpr int64_t kIntLimit = int64_t(1) << 29;

int pow2_at_least(int64_t v, int cap) {
  int r = 1;
  while (r < v && r < cap) r <<= 1;
  return r;
}

bool geometry_fits_int(const Conv2dParams& p) {
  const int64_t vals[] = {p.in_h, p.in_w, p.out_h, p.out_w, p.pad_top, p.pad_left, p.stride_h, p.stride_w,
                          (p.kernel_h - 1) * p.dilation_h + 1, (p.kernel_w - 1) * p.dilation_w + 1,
                          p.kernel_h * p.kernel_w};
  for (int64_t v : vals) {
    if (v >= kIntLimit) return false;
  }
  return p.in_h * p.in_w < kIntLimit * 2 && p.out_h * p.out_w < kIntLimit * 2;
}

bool force_generic() { return env_flag("CNNEXT_CUDA_DIRECT_GENERIC"); }

// Launch geometry of the tiled forward / grad_input kernels.
struct ConvTile {
  int threads;
  int tile_h, tile_w;    // result pixels per block
  int ch_groups;         // groups of kChannelsPerThread result channels per block
  int chunk;             // reduction channels staged per step
  int patch_h, patch_w;  // staged window operand per reduction channel
  int smem_bytes;
  int64_t tiles_w, tiles;  // spatial tiles across the width / per plane
  int64_t ch_tiles;        // channel tiles per group
};

// Rows of input a forward tile of `tile` outputs reads.
int64_t forward_extent(int tile, int64_t k, int64_t s, int64_t d) { return (tile - 1) * s + (k - 1) * d + 1; }

// Rows of grad_output a grad_input tile of `tile` inputs reads: the outputs
// o with o*s - pad + kk*d inside the tile for some tap kk. The tile's origin
// shifts the range by at most one row, hence the +1 over the exact span.
int64_t grad_input_extent(int tile, int64_t k, int64_t s, int64_t d) {
  return ceil_div((tile - 1) + (k - 1) * d, s) + 1;
}

// Chooses tile sizes for a result of sp_h x sp_w pixels with own_ch channels
// per group, reducing over red_ch channels; false if even the smallest tile
// does not fit in shared memory.
template <typename Extent>
bool plan_conv_tile(const Conv2dParams& p, int64_t sp_h, int64_t sp_w, int64_t own_ch, int64_t red_ch,
                    int64_t elem, Extent extent, ConvTile& t) {
  const int64_t kk = p.kernel_h * p.kernel_w;
  int tw = pow2_at_least(sp_w, 32);
  int th = pow2_at_least(sp_h, kMaxThreads / tw);
  int groups = static_cast<int>(std::min<int64_t>(kMaxThreads / (th * tw),
                                                  std::max<int64_t>(1, ceil_div(own_ch, kChannelsPerThread))));
  for (;;) {
    const int64_t ph = extent(th, p.kernel_h, p.stride_h, p.dilation_h);
    const int64_t pw = extent(tw, p.kernel_w, p.stride_w, p.dilation_w);
    const int64_t patch = ph * pw;
    const int64_t wts = int64_t(groups) * kChannelsPerThread * kk;
    const int64_t per_ch = (patch + wts) * elem;
    if (per_ch <= kSmemBudget) {
      const int64_t chunk = std::min<int64_t>(std::max<int64_t>(red_ch, 1), kSmemBudget / per_ch);
      t.threads = th * tw * groups;
      t.tile_h = th;
      t.tile_w = tw;
      t.ch_groups = groups;
      t.chunk = static_cast<int>(chunk);
      t.patch_h = static_cast<int>(ph);
      t.patch_w = static_cast<int>(pw);
      t.smem_bytes = static_cast<int>(chunk * per_ch);
      t.tiles_w = ceil_div(sp_w, tw);
      t.tiles = ceil_div(sp_h, th) * t.tiles_w;
      t.ch_tiles = ceil_div(std::max<int64_t>(own_ch, 1), int64_t(groups) * kChannelsPerThread);
      return true;
    }
    // Shrink whichever staged operand dominates.
    if ((patch >= wts || groups == 1) && th * tw > 1) {
      if (th >= tw) {
        th /= 2;
      } else {
        tw /= 2;
      }
    } else if (groups > 1) {
      groups = (groups + 1) / 2;
    } else {
      return false;
    }
  }
}

dim3 conv_grid(const ConvTile& t, const Conv2dParams& p) {
  const int64_t ch_blocks = p.groups * t.ch_tiles;
  // y and z are capped at 65535; the kernels stride over the rest.
  return dim3(static_cast<unsigned int>(t.tiles), static_cast<unsigned int>(std::min<int64_t>(ch_blocks, 65535)),
              static_cast<unsigned int>(std::min<int64_t>(p.batch, 65535)));
}

// ---------------------------------------------------------------------------
// forward

template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    conv_forward_tiled(const Conv2dParams p, const ConvTile t, const T* __restrict__ input,
                       const T* __restrict__ weight, const T* __restrict__ bias, T* __restrict__ output) {
  using A = acc_t<T>;
  constexpr int CPT = kChannelsPerThread;
  CNNEXT_DYNAMIC_SHARED(smem_raw);
  A* patch = reinterpret_cast<A*>(smem_raw);  // [chunk][patch_h][patch_w]
  const int patch_size = t.patch_h * t.patch_w;
  const int co_tile = t.ch_groups * CPT;
  A* wts = patch + t.chunk * patch_size;  // [chunk][co_tile][KH*KW]

  const int KH = static_cast<int>(p.kernel_h), KW = static_cast<int>(p.kernel_w), KK = KH * KW;
  const int sh = static_cast<int>(p.stride_h), sw = static_cast<int>(p.stride_w);
  const int dh = static_cast<int>(p.dilation_h), dw = static_cast<int>(p.dilation_w);
  const int H = static_cast<int>(p.in_h), W = static_cast<int>(p.in_w);
  const int64_t cin_pg = p.in_channels / p.groups, cout_pg = p.out_channels / p.groups;

  const int tile_pix = t.tile_h * t.tile_w;
  const int pix = threadIdx.x % tile_pix;
  const int grp = threadIdx.x / tile_pix;
  const int ty = pix / t.tile_w, tx = pix % t.tile_w;
  const int oh0 = static_cast<int>(blockIdx.x / t.tiles_w) * t.tile_h;
  const int ow0 = static_cast<int>(blockIdx.x % t.tiles_w) * t.tile_w;
  const int ih0 = oh0 * sh - static_cast<int>(p.pad_top);
  const int iw0 = ow0 * sw - static_cast<int>(p.pad_left);
  const int oh = oh0 + ty, ow = ow0 + tx;
  const int64_t ch_blocks = p.groups * t.ch_tiles;

  for (int64_t n = blockIdx.z; n < p.batch; n += gridDim.z) {
    for (int64_t gb = blockIdx.y; gb < ch_blocks; gb += gridDim.y) {
      const int64_t g = gb / t.ch_tiles;
      const int64_t co_base = (gb % t.ch_tiles) * co_tile;  // within the group
      const T* in_g = input + (n * p.in_channels + g * cin_pg) * H * W;
      const T* w_g = weight + (g * cout_pg + co_base) * cin_pg * KK;
      A acc[CPT];
#pragma unroll
      for (int j = 0; j < CPT; ++j) acc[j] = A(0);

      for (int64_t ci0 = 0; ci0 < cin_pg; ci0 += t.chunk) {
        const int cc = static_cast<int>(min64(t.chunk, cin_pg - ci0));
        __syncthreads();  // the previous chunk (or tile) is no longer being read
        // Zero-filled outside the input, so the compute loop needs no bounds checks.
        for (int i = threadIdx.x; i < cc * patch_size; i += blockDim.x) {
          const int c = i / patch_size, r = i - c * patch_size;
          const int y = r / t.patch_w, x = r - y * t.patch_w;
          const int ih = ih0 + y, iw = iw0 + x;
          A v = A(0);
          if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
            v = to_acc(ldg(in_g + ((ci0 + c) * H + ih) * int64_t(W) + iw));
          }
          patch[i] = v;
        }
        // Global reads run along (ci, kh, kw) of one output channel: coalesced.
        const int wrow = cc * KK;
        for (int i = threadIdx.x; i < co_tile * wrow; i += blockDim.x) {
          const int co_l = i / wrow, r = i - co_l * wrow;
          const int c = r / KK, k = r - c * KK;
          A v = A(0);
          if (co_base + co_l < cout_pg) v = to_acc(ldg(w_g + (co_l * cin_pg + ci0) * KK + r));
          wts[(c * co_tile + co_l) * KK + k] = v;
        }
        __syncthreads();

        const A* prow = patch + ty * sh * t.patch_w + tx * sw;
        const A* wgrp = wts + grp * CPT * KK;
        for (int c = 0; c < cc; ++c) {
          const A* pc = prow + c * patch_size;
          const A* wc = wgrp + c * co_tile * KK;
          for (int kh = 0; kh < KH; ++kh) {
            const A* pr = pc + kh * dh * t.patch_w;
            const A* wr = wc + kh * KW;
            for (int kw = 0; kw < KW; ++kw) {
              const A v = pr[kw * dw];
#pragma unroll
              for (int j = 0; j < CPT; ++j) acc[j] += v * wr[j * KK + kw];
            }
          }
        }
      }

      if (oh < p.out_h && ow < p.out_w) {
#pragma unroll
        for (int j = 0; j < CPT; ++j) {
          const int64_t co = co_base + grp * CPT + j;
          if (co < cout_pg) {
            A r = acc[j];
            if (bias != nullptr) r += to_acc(ldg(bias + g * cout_pg + co));
            output[((n * p.out_channels + g * cout_pg + co) * p.out_h + oh) * p.out_w + ow] = from_acc<T>(r);
          }
        }
      }
    }
  }
}

template <typename T>
__global__ void conv_forward_generic(const Conv2dParams p, const T* __restrict__ input,
                                     const T* __restrict__ weight, const T* __restrict__ bias,
                                     T* __restrict__ output) {
  using A = acc_t<T>;
  const int64_t cin_pg = p.in_channels / p.groups, cout_pg = p.out_channels / p.groups;
  const int64_t total = p.batch * p.out_channels * p.out_h * p.out_w;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t ow = idx % p.out_w;
    int64_t r = idx / p.out_w;
    const int64_t oh = r % p.out_h;
    r /= p.out_h;
    const int64_t co = r % p.out_channels;
    const int64_t n = r / p.out_channels;
    const int64_t g = co / cout_pg;
    A acc = bias != nullptr ? to_acc(ldg(bias + co)) : A(0);
    for (int64_t ci = 0; ci < cin_pg; ++ci) {
      const T* in_c = input + ((n * p.in_channels + g * cin_pg + ci) * p.in_h) * p.in_w;
      const T* w_c = weight + (co * cin_pg + ci) * p.kernel_h * p.kernel_w;
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
        if (ih < 0 || ih >= p.in_h) continue;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
          if (iw < 0 || iw >= p.in_w) continue;
          acc += to_acc(ldg(in_c + ih * p.in_w + iw)) * to_acc(ldg(w_c + kh * p.kernel_w + kw));
        }
      }
    }
    output[idx] = from_acc<T>(acc);
  }
}

// ---------------------------------------------------------------------------
// grad_input: the transposed convolution, as a gather. Input pixel ih gets
// grad_output row oh from tap kh exactly when ih + pad - kh*dh == oh*sh, so
// each thread walks its taps, keeps the ones that divide, and reads the
// staged grad_output patch; there are no write conflicts to resolve.

template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    conv_grad_input_tiled(const Conv2dParams p, const ConvTile t, const T* __restrict__ grad_output,
                          const T* __restrict__ weight, T* __restrict__ grad_input) {
  using A = acc_t<T>;
  constexpr int CPT = kChannelsPerThread;
  CNNEXT_DYNAMIC_SHARED(smem_raw);
  A* patch = reinterpret_cast<A*>(smem_raw);  // [chunk][patch_h][patch_w] of grad_output
  const int patch_size = t.patch_h * t.patch_w;
  const int ci_tile = t.ch_groups * CPT;
  A* wts = patch + t.chunk * patch_size;  // [chunk][ci_tile][KH*KW]

  const int KH = static_cast<int>(p.kernel_h), KW = static_cast<int>(p.kernel_w), KK = KH * KW;
  const int sh = static_cast<int>(p.stride_h), sw = static_cast<int>(p.stride_w);
  const int dh = static_cast<int>(p.dilation_h), dw = static_cast<int>(p.dilation_w);
  const int pt = static_cast<int>(p.pad_top), pl = static_cast<int>(p.pad_left);
  const int H = static_cast<int>(p.in_h), W = static_cast<int>(p.in_w);
  const int OH = static_cast<int>(p.out_h), OW = static_cast<int>(p.out_w);
  const int64_t cin_pg = p.in_channels / p.groups, cout_pg = p.out_channels / p.groups;

  const int tile_pix = t.tile_h * t.tile_w;
  const int pix = threadIdx.x % tile_pix;
  const int grp = threadIdx.x / tile_pix;
  const int ty = pix / t.tile_w, tx = pix % t.tile_w;
  const int ih0 = static_cast<int>(blockIdx.x / t.tiles_w) * t.tile_h;
  const int iw0 = static_cast<int>(blockIdx.x % t.tiles_w) * t.tile_w;
  const int ih = ih0 + ty, iw = iw0 + tx;
  // First grad_output row/column any pixel of the tile reads (may be negative:
  // those rows are staged as zeros).
  const int oh_start = static_cast<int>(floor_div(ih0 + pt - (KH - 1) * dh, sh));
  const int ow_start = static_cast<int>(floor_div(iw0 + pl - (KW - 1) * dw, sw));
  const int64_t ch_blocks = p.groups * t.ch_tiles;

  for (int64_t n = blockIdx.z; n < p.batch; n += gridDim.z) {
    for (int64_t gb = blockIdx.y; gb < ch_blocks; gb += gridDim.y) {
      const int64_t g = gb / t.ch_tiles;
      const int64_t ci_base = (gb % t.ch_tiles) * ci_tile;  // within the group
      const T* go_g = grad_output + (n * p.out_channels + g * cout_pg) * OH * OW;
      A acc[CPT];
#pragma unroll
      for (int j = 0; j < CPT; ++j) acc[j] = A(0);

      for (int64_t co0 = 0; co0 < cout_pg; co0 += t.chunk) {
        const int cc = static_cast<int>(min64(t.chunk, cout_pg - co0));
        __syncthreads();
        for (int i = threadIdx.x; i < cc * patch_size; i += blockDim.x) {
          const int c = i / patch_size, r = i - c * patch_size;
          const int y = r / t.patch_w, x = r - y * t.patch_w;
          const int oh = oh_start + y, ow = ow_start + x;
          A v = A(0);
          if (oh >= 0 && oh < OH && ow >= 0 && ow < OW) {
            v = to_acc(ldg(go_g + ((co0 + c) * OH + oh) * int64_t(OW) + ow));
          }
          patch[i] = v;
        }
        // For a fixed output channel the block's (ci, kh, kw) weights are contiguous.
        const int wrow = ci_tile * KK;
        for (int i = threadIdx.x; i < cc * wrow; i += blockDim.x) {
          const int c = i / wrow, r = i - c * wrow;
          const int ci_l = r / KK;
          A v = A(0);
          if (ci_base + ci_l < cin_pg) {
            v = to_acc(ldg(weight + ((g * cout_pg + co0 + c) * cin_pg + ci_base) * KK + r));
          }
          wts[i] = v;
        }
        __syncthreads();

        const A* wgrp = wts + grp * CPT * KK;
        for (int kh = 0; kh < KH; ++kh) {
          const int th = ih + pt - kh * dh;
          if (th < 0) break;  // decreasing in kh: no later tap reaches a real output row
          if (th % sh != 0) continue;
          const int prow = th / sh - oh_start;
          for (int kw = 0; kw < KW; ++kw) {
            const int tw = iw + pl - kw * dw;
            if (tw < 0) break;
            if (tw % sw != 0) continue;
            const A* pc = patch + prow * t.patch_w + (tw / sw - ow_start);
            const A* wk = wgrp + kh * KW + kw;
            for (int c = 0; c < cc; ++c) {
              const A v = pc[c * patch_size];
              const A* wc = wk + c * ci_tile * KK;
#pragma unroll
              for (int j = 0; j < CPT; ++j) acc[j] += v * wc[j * KK];
            }
          }
        }
      }

      if (ih < H && iw < W) {
#pragma unroll
        for (int j = 0; j < CPT; ++j) {
          const int64_t ci = ci_base + grp * CPT + j;
          if (ci < cin_pg) {
            grad_input[((n * p.in_channels + g * cin_pg + ci) * H + ih) * int64_t(W) + iw] = from_acc<T>(acc[j]);
          }
        }
      }
    }
  }
}

template <typename T>
__global__ void conv_grad_input_generic(const Conv2dParams p, const T* __restrict__ grad_output,
                                        const T* __restrict__ weight, T* __restrict__ grad_input) {
  using A = acc_t<T>;
  const int64_t cin_pg = p.in_channels / p.groups, cout_pg = p.out_channels / p.groups;
  const int64_t total = p.batch * p.in_channels * p.in_h * p.in_w;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t iw = idx % p.in_w;
    int64_t r = idx / p.in_w;
    const int64_t ih = r % p.in_h;
    r /= p.in_h;
    const int64_t ci = r % p.in_channels;
    const int64_t n = r / p.in_channels;
    const int64_t g = ci / cin_pg, ci_l = ci - g * cin_pg;
    A acc = A(0);
    for (int64_t co = g * cout_pg; co < (g + 1) * cout_pg; ++co) {
      const T* go_c = grad_output + (n * p.out_channels + co) * p.out_h * p.out_w;
      const T* w_c = weight + (co * cin_pg + ci_l) * p.kernel_h * p.kernel_w;
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        const int64_t th = ih + p.pad_top - kh * p.dilation_h;
        if (th < 0) break;
        if (th % p.stride_h != 0 || th / p.stride_h >= p.out_h) continue;
        const int64_t oh = th / p.stride_h;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const int64_t tw = iw + p.pad_left - kw * p.dilation_w;
          if (tw < 0) break;
          if (tw % p.stride_w != 0 || tw / p.stride_w >= p.out_w) continue;
          const int64_t ow = tw / p.stride_w;
          acc += to_acc(ldg(go_c + oh * p.out_w + ow)) * to_acc(ldg(w_c + kh * p.kernel_w + kw));
        }
      }
    }
    grad_input[idx] = from_acc<T>(acc);
  }
}

// ---------------------------------------------------------------------------
// grad_weight

template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    conv_grad_weight_tiled(const Conv2dParams p, const launch::GradWeightPlan plan, const T* __restrict__ grad_output,
                           const T* __restrict__ input, T* __restrict__ grad_weight, acc_t<T>* __restrict__ partial) {
  using A = acc_t<T>;
  constexpr int EPT = kWeightsPerThread;
  CNNEXT_DYNAMIC_SHARED(smem_raw);
  const int tile_pix = plan.tile_h * plan.tile_w;
  const int patch_size = plan.patch_h * plan.patch_w;
  A* gsh = reinterpret_cast<A*>(smem_raw);    // [co_tile][tile_pix] of grad_output
  A* patch = gsh + plan.co_tile * tile_pix;  // [ci_tile][patch_h][patch_w] of input

  const int KH = static_cast<int>(p.kernel_h), KW = static_cast<int>(p.kernel_w), KK = KH * KW;
  const int sh = static_cast<int>(p.stride_h), sw = static_cast<int>(p.stride_w);
  const int dh = static_cast<int>(p.dilation_h), dw = static_cast<int>(p.dilation_w);
  const int H = static_cast<int>(p.in_h), W = static_cast<int>(p.in_w);
  const int OH = static_cast<int>(p.out_h), OW = static_cast<int>(p.out_w);
  const int64_t cin_pg = p.in_channels / p.groups, cout_pg = p.out_channels / p.groups;

  const int64_t co_tiles = ceil_div(cout_pg, plan.co_tile), ci_tiles = ceil_div(cin_pg, plan.ci_tile);
  const int64_t g = blockIdx.x / (co_tiles * ci_tiles);
  const int64_t wt = blockIdx.x % (co_tiles * ci_tiles);
  const int64_t co_base = (wt / ci_tiles) * plan.co_tile;
  const int64_t ci_base = (wt % ci_tiles) * plan.ci_tile;

  // This thread's weight elements and where their operands sit in the
  // staged tiles; out-of-range elements read slot 0 and are never stored.
  const int elems = plan.co_tile * plan.ci_tile * KK;
  int g_off[EPT], p_off[EPT];
  A acc[EPT];
#pragma unroll
  for (int k = 0; k < EPT; ++k) {
    const int e = threadIdx.x + k * blockDim.x;
    g_off[k] = 0;
    p_off[k] = 0;
    acc[k] = A(0);
    if (e < elems) {
      const int co_l = e / (plan.ci_tile * KK), r = e - co_l * plan.ci_tile * KK;
      const int ci_l = r / KK, kk = r - ci_l * KK;
      const int kh = kk / KW, kw = kk - kh * KW;
      g_off[k] = co_l * tile_pix;
      p_off[k] = ci_l * patch_size + kh * dh * plan.patch_w + kw * dw;
    }
  }

  const int64_t tiles_w = ceil_div(OW, plan.tile_w);
  const int64_t tiles = ceil_div(OH, plan.tile_h) * tiles_w;
  const int64_t steps = p.batch * tiles;
  for (int64_t step = blockIdx.y; step < steps; step += gridDim.y) {
    const int64_t n = step / tiles, tile = step % tiles;
    const int oh0 = static_cast<int>(tile / tiles_w) * plan.tile_h;
    const int ow0 = static_cast<int>(tile % tiles_w) * plan.tile_w;
    const int ih0 = oh0 * sh - static_cast<int>(p.pad_top);
    const int iw0 = ow0 * sw - static_cast<int>(p.pad_left);
    // Only the tile's pixels inside the output are summed: a zero gradient staged past the edge would still
    // turn an infinite input there into 0 * inf = NaN, and its taps may reach past the staged patch.
    const int valid_h = min(plan.tile_h, OH - oh0), valid_w = min(plan.tile_w, OW - ow0);
    __syncthreads();
    for (int i = threadIdx.x; i < plan.co_tile * tile_pix; i += blockDim.x) {
      const int co_l = i / tile_pix, r = i - co_l * tile_pix;
      const int oh = oh0 + r / plan.tile_w, ow = ow0 + r % plan.tile_w;
      A v = A(0);
      if (co_base + co_l < cout_pg && oh < OH && ow < OW) {
        v = to_acc(
            ldg(grad_output + ((n * p.out_channels + g * cout_pg + co_base + co_l) * OH + oh) * int64_t(OW) + ow));
      }
      gsh[i] = v;
    }
    for (int i = threadIdx.x; i < plan.ci_tile * patch_size; i += blockDim.x) {
      const int c = i / patch_size, r = i - c * patch_size;
      const int ih = ih0 + r / plan.patch_w, iw = iw0 + r % plan.patch_w;
      A v = A(0);
      if (ci_base + c < cin_pg && ih >= 0 && ih < H && iw >= 0 && iw < W) {
        v = to_acc(ldg(input + ((n * p.in_channels + g * cin_pg + ci_base + c) * H + ih) * int64_t(W) + iw));
      }
      patch[i] = v;
    }
    __syncthreads();
    for (int py = 0; py < valid_h; ++py) {
      for (int px = 0; px < valid_w; ++px) {
        const int gp = py * plan.tile_w + px;
        const int pp = py * sh * plan.patch_w + px * sw;
#pragma unroll
        for (int k = 0; k < EPT; ++k) acc[k] += gsh[g_off[k] + gp] * patch[p_off[k] + pp];
      }
    }
  }

  const int64_t wnumel = p.out_channels * cin_pg * KK;
#pragma unroll
  for (int k = 0; k < EPT; ++k) {
    const int e = threadIdx.x + k * blockDim.x;
    if (e >= elems) continue;
    const int co_l = e / (plan.ci_tile * KK), r = e - co_l * plan.ci_tile * KK;
    const int ci_l = r / KK, kk = r - ci_l * KK;
    const int64_t co = co_base + co_l, ci = ci_base + ci_l;
    if (co >= cout_pg || ci >= cin_pg) continue;
    const int64_t widx = ((g * cout_pg + co) * cin_pg + ci) * KK + kk;
    if (gridDim.y == 1) {
      grad_weight[widx] = from_acc<T>(acc[k]);
    } else {
      partial[blockIdx.y * wnumel + widx] = acc[k];
    }
  }
}

// Sums the slices' partial results in slice order: the same bits every run.
template <typename T>
__global__ void reduce_slices(const acc_t<T>* __restrict__ partial, int64_t slices, int64_t n,
                              T* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    acc_t<T> s = 0;
    for (int64_t sl = 0; sl < slices; ++sl) s += partial[sl * n + i];
    out[i] = from_acc<T>(s);
  }
}

// One block per weight element, threads striding over N x OH x OW, then a
// fixed-shape block reduction. Slow but shape-agnostic.
template <typename T>
__global__ void conv_grad_weight_generic(const Conv2dParams p, const T* __restrict__ grad_output,
                                         const T* __restrict__ input, T* __restrict__ grad_weight) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  const int64_t cin_pg = p.in_channels / p.groups, cout_pg = p.out_channels / p.groups;
  const int64_t wnumel = p.out_channels * cin_pg * p.kernel_h * p.kernel_w;
  const int64_t positions = p.batch * p.out_h * p.out_w;
  for (int64_t e = blockIdx.x; e < wnumel; e += gridDim.x) {
    const int64_t kw = e % p.kernel_w;
    int64_t r = e / p.kernel_w;
    const int64_t kh = r % p.kernel_h;
    r /= p.kernel_h;
    const int64_t ci = (r / cin_pg) / cout_pg * cin_pg + r % cin_pg;  // global input channel
    const int64_t co = r / cin_pg;
    A acc = A(0);
    for (int64_t q = threadIdx.x; q < positions; q += blockDim.x) {
      const int64_t ow = q % p.out_w;
      const int64_t t = q / p.out_w;
      const int64_t oh = t % p.out_h;
      const int64_t n = t / p.out_h;
      const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
      const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
      if (ih < 0 || ih >= p.in_h || iw < 0 || iw >= p.in_w) continue;
      acc += to_acc(ldg(grad_output + ((n * p.out_channels + co) * p.out_h + oh) * p.out_w + ow)) *
             to_acc(ldg(input + ((n * p.in_channels + ci) * p.in_h + ih) * p.in_w + iw));
    }
    acc = block_reduce_sum(acc, scratch);
    if (threadIdx.x == 0) grad_weight[e] = from_acc<T>(acc);
  }
}

// ---------------------------------------------------------------------------
// grad_bias: one block per channel, fixed-shape block reduction.

template <typename T, typename index_t>
__global__ void grad_bias_kernel(index_t batch, index_t channels, index_t plane, const T* __restrict__ grad_output,
                                 T* __restrict__ grad_bias) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  const index_t total = batch * plane;
  for (index_t c = blockIdx.x; c < channels; c += gridDim.x) {
    A acc = A(0);
    for (index_t i = threadIdx.x; i < total; i += blockDim.x) {
      const index_t n = i / plane, r = i - n * plane;
      acc += to_acc(ldg(grad_output + (n * channels + c) * plane + r));
    }
    acc = block_reduce_sum(acc, scratch);
    if (threadIdx.x == 0) grad_bias[c] = from_acc<T>(acc);
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// launchers

namespace launch {

template <typename T>
cudaError_t conv2d_direct_forward(const Conv2dParams& p, const T* input, const T* weight, const T* bias, T* output,
                                  cudaStream_t stream) {
  const int64_t total = p.batch * p.out_channels * p.out_h * p.out_w;
  if (total == 0) return cudaSuccess;
  ConvTile t{};
  const bool tiled = !force_generic() && geometry_fits_int(p) &&
                     plan_conv_tile(p, p.out_h, p.out_w, p.out_channels / p.groups, p.in_channels / p.groups,
                                    sizeof(acc_t<T>), forward_extent, t);
  if (tiled) {
    CNNEXT_LAUNCH(conv_grid(t, p), t.threads, t.smem_bytes, stream, conv_forward_tiled<T>)(p, t, input, weight, bias,
                                                                                         output);
  } else {
    CNNEXT_LAUNCH(grid_for(total, 256), 256, 0, stream, conv_forward_generic<T>)(p, input, weight, bias, output);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t conv2d_direct_grad_input(const Conv2dParams& p, const T* grad_output, const T* weight, T* grad_input,
                                     cudaStream_t stream) {
  const int64_t total = p.batch * p.in_channels * p.in_h * p.in_w;
  if (total == 0) return cudaSuccess;
  ConvTile t{};
  const bool tiled = !force_generic() && geometry_fits_int(p) &&
                     plan_conv_tile(p, p.in_h, p.in_w, p.in_channels / p.groups, p.out_channels / p.groups,
                                    sizeof(acc_t<T>), grad_input_extent, t);
  if (tiled) {
    CNNEXT_LAUNCH(conv_grid(t, p), t.threads, t.smem_bytes, stream, conv_grad_input_tiled<T>)(p, t, grad_output, weight,
                                                                                            grad_input);
  } else {
    CNNEXT_LAUNCH(grid_for(total, 256), 256, 0, stream, conv_grad_input_generic<T>)(p, grad_output, weight, grad_input);
  }
  return cudaGetLastError();
}

template <typename T>
GradWeightPlan conv2d_direct_grad_weight_plan(const Conv2dParams& p) {
  GradWeightPlan plan{};
  plan.generic = true;
  plan.slices = 1;
  const int64_t cin_pg = p.in_channels / p.groups, cout_pg = p.out_channels / p.groups;
  const int64_t kk = p.kernel_h * p.kernel_w;
  const int64_t cap = int64_t(kWeightsPerThread) * kMaxThreads;  // weight elements per block
  if (force_generic() || !geometry_fits_int(p) || kk > cap || cin_pg == 0 || cout_pg == 0) return plan;

  int64_t co_tile = std::min<int64_t>(cout_pg, std::max<int64_t>(1, std::min<int64_t>(32, cap / kk)));
  int64_t ci_tile = std::min<int64_t>(cin_pg, std::max<int64_t>(1, cap / (co_tile * kk)));
  int tw = pow2_at_least(p.out_w, 16);
  int th = pow2_at_least(p.out_h, 128 / tw);
  const int64_t elem = sizeof(acc_t<T>);
  for (;;) {
    const int64_t ph = forward_extent(th, p.kernel_h, p.stride_h, p.dilation_h);
    const int64_t pw = forward_extent(tw, p.kernel_w, p.stride_w, p.dilation_w);
    const int64_t smem = (co_tile * th * tw + ci_tile * ph * pw) * elem;
    if (smem <= kSmemBudget) {
      plan.patch_h = static_cast<int>(ph);
      plan.patch_w = static_cast<int>(pw);
      break;
    }
    if (ci_tile > 1) {
      ci_tile = (ci_tile + 1) / 2;
    } else if (th * tw > 1) {
      if (th >= tw) {
        th /= 2;
      } else {
        tw /= 2;
      }
    } else if (co_tile > 1) {
      co_tile = (co_tile + 1) / 2;
    } else {
      return plan;
    }
  }
  plan.generic = false;
  plan.tile_h = th;
  plan.tile_w = tw;
  plan.co_tile = static_cast<int>(co_tile);
  plan.ci_tile = static_cast<int>(ci_tile);
  const int64_t elems = co_tile * ci_tile * kk;
  plan.threads = static_cast<int>(std::min<int64_t>(kMaxThreads, ceil_div(elems, 32) * 32));

  // Enough blocks to fill the device a few times; the rest of the reduction
  // runs inside each block, so the workspace stays small.
  const int64_t weight_tiles = p.groups * ceil_div(cout_pg, co_tile) * ceil_div(cin_pg, ci_tile);
  const int64_t steps = p.batch * ceil_div(p.out_h, th) * ceil_div(p.out_w, tw);
  const int64_t target_blocks = 4 * int64_t(multiprocessor_count());
  int64_t slices = ceil_div(target_blocks, weight_tiles);
  slices = std::max<int64_t>(1, std::min<int64_t>({slices, steps, 1024}));
  plan.slices = slices;
  plan.workspace_elems = slices > 1 ? slices * p.out_channels * cin_pg * kk : 0;
  return plan;
}

template <typename T>
cudaError_t conv2d_direct_grad_weight(const Conv2dParams& p, const GradWeightPlan& plan, const T* grad_output,
                                      const T* input, T* grad_weight, acc_t<T>* workspace, cudaStream_t stream) {
  const int64_t wnumel = p.out_channels * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w;
  if (wnumel == 0) return cudaSuccess;
  if (p.batch == 0 || p.out_h * p.out_w == 0) {
    // An empty reduction; all-zero bits are 0.0 in every supported type.
    return cudaMemsetAsync(grad_weight, 0, wnumel * sizeof(T), stream);
  }
  if (plan.generic) {
    CNNEXT_LAUNCH(grid_for(wnumel * 256, 256), 256, 0, stream, conv_grad_weight_generic<T>)(p, grad_output, input,
                                                                                           grad_weight);
    return cudaGetLastError();
  }
  if (plan.slices > 1 && workspace == nullptr) return cudaErrorInvalidValue;
  const int64_t cin_pg = p.in_channels / p.groups, cout_pg = p.out_channels / p.groups;
  const int64_t weight_tiles = p.groups * ceil_div(cout_pg, plan.co_tile) * ceil_div(cin_pg, plan.ci_tile);
  const int smem = static_cast<int>((int64_t(plan.co_tile) * plan.tile_h * plan.tile_w +
                                     int64_t(plan.ci_tile) * plan.patch_h * plan.patch_w) *
                                    sizeof(acc_t<T>));
  const dim3 grid(static_cast<unsigned int>(weight_tiles), static_cast<unsigned int>(plan.slices));
  CNNEXT_LAUNCH(grid, plan.threads, smem, stream, conv_grad_weight_tiled<T>)(p, plan, grad_output, input, grad_weight,
                                                                             workspace);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || plan.slices == 1) return err;
  CNNEXT_LAUNCH(grid_for(wnumel, 256), 256, 0, stream, reduce_slices<T>)(workspace, plan.slices, wnumel, grad_weight);
  return cudaGetLastError();
}

template <typename T>
cudaError_t conv2d_grad_bias(int64_t batch, int64_t channels, int64_t plane, const T* grad_output, T* grad_bias,
                             cudaStream_t stream) {
  if (channels == 0) return cudaSuccess;
  if (batch * plane == 0) return cudaMemsetAsync(grad_bias, 0, channels * sizeof(T), stream);
  const unsigned int grid = static_cast<unsigned int>(std::min<int64_t>(channels, int64_t(1) << 20));
  if (fits_int32(batch * channels * plane)) {
    CNNEXT_LAUNCH(grid, 256, 0, stream, grad_bias_kernel<T, int>)(static_cast<int>(batch), static_cast<int>(channels),
                                                                static_cast<int>(plane), grad_output, grad_bias);
  } else {
    CNNEXT_LAUNCH(grid, 256, 0, stream, grad_bias_kernel<T, int64_t>)(batch, channels, plane, grad_output, grad_bias);
  }
  return cudaGetLastError();
}

#define CNNEXT_INSTANTIATE_DIRECT(T)                                                                        \
  template cudaError_t conv2d_direct_forward<T>(const Conv2dParams&, const T*, const T*, const T*, T*,      \
                                                cudaStream_t);                                              \
  template cudaError_t conv2d_direct_grad_input<T>(const Conv2dParams&, const T*, const T*, T*, cudaStream_t); \
  template GradWeightPlan conv2d_direct_grad_weight_plan<T>(const Conv2dParams&);                           \
  template cudaError_t conv2d_direct_grad_weight<T>(const Conv2dParams&, const GradWeightPlan&, const T*,    \
                                                    const T*, T*, acc_t<T>*, cudaStream_t);                 \
  template cudaError_t conv2d_grad_bias<T>(int64_t, int64_t, int64_t, const T*, T*, cudaStream_t);

CNNEXT_INSTANTIATE_DIRECT(float)
CNNEXT_INSTANTIATE_DIRECT(double)
CNNEXT_INSTANTIATE_DIRECT(__half)
CNNEXT_INSTANTIATE_DIRECT(__nv_bfloat16)
#undef CNNEXT_INSTANTIATE_DIRECT

}  // namespace launch
}  // namespace cuda
}  // namespace cnnext
