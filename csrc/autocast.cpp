// Autocast kernels: inside torch.autocast the ops follow the policy PyTorch
// gives its own layers.
// - conv2d runs in the autocast's lower precision (torch.get_autocast_dtype
//   of the device: bfloat16 on the CPU and float16 on CUDA unless set
//   otherwise), as aten::conv2d does: every floating input that is not
//   float64 is cast to it, so a bfloat16 activation meets a float32 layer's
//   parameters in one dtype. The casts go through at::autocast::cached_cast,
//   which keeps the cast copy of a leaf parameter for the whole autocast
//   region, and run above the Autograd key, so autograd sees them and the
//   parameters' gradients come back in their own dtype.
// - max_pool2d has no autocast kernel: like aten::max_pool2d it runs in its
//   input's dtype (the Autocast keys fall through).
// The backward ops are not listed either: under autocast they receive the
// tensors the forward saved, already in one dtype.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace cnnext {
namespace {

using Conv2dSig = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                             at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t, c10::string_view);

// cnnext::conv2d through the dispatcher, so the keys below Autocast
// (Autograd, the backends) still run.
at::Tensor conv2d_redispatch(const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups, c10::string_view algo) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("cnnext::conv2d", "").typed<Conv2dSig>();
  return op.call(input, weight, bias, stride, padding, dilation, groups, algo);
}

template <c10::DeviceType device>
using LowerPrecisionConv2d =
    at::autocast::WrapFunction<at::autocast::CastPolicy::lower_precision_fp, device, Conv2dSig, Conv2dSig,
                               &conv2d_redispatch>;

}  // namespace

TORCH_LIBRARY_IMPL(cnnext, AutocastCPU, m) {
  m.impl("conv2d", &LowerPrecisionConv2d<c10::DeviceType::CPU>::type::call);
}

// Needs no CUDA headers, so every build registers it; only CUDA tensors reach it.
TORCH_LIBRARY_IMPL(cnnext, AutocastCUDA, m) {
  m.impl("conv2d", &LowerPrecisionConv2d<c10::DeviceType::CUDA>::type::call);
}

}  // namespace cnnext
