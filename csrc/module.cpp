// The Python extension module cnnext._C. Loading it registers the ops
// (torch.ops.cnnext.*); its Python functions report how it was built and
// which CPU instruction set the run-time dispatched kernels use.
#include <torch/extension.h>

#include "cpu/conv2d_plan.h"
#include "cpu/isa.h"

#ifndef CNNEXT_VERSION
#error "setup.py defines CNNEXT_VERSION"
#endif
#ifndef CNNEXT_TORCH_VERSION
#error "setup.py defines CNNEXT_TORCH_VERSION"
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  info["version"] = CNNEXT_VERSION;
  info["torch_version"] = CNNEXT_TORCH_VERSION;
#ifdef CNNEXT_WITH_CUDA
  info["cuda"] = true;
  info["cuda_version"] = CNNEXT_CUDA_VERSION;
  info["cuda_archs"] = CNNEXT_CUDA_ARCHS;
#else
  info["cuda"] = false;
  info["cuda_version"] = pybind11::none();
  info["cuda_archs"] = "";
#endif
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
#if defined(__x86_64__)
  info["cpu_isa_dispatch"] =
      "avx512 (x86-64-v4), avx2 (x86-64-v3: AVX2+FMA), baseline (x86-64): every CPU kernel, chosen at run time "
      "(cnnext.set_cpu_isa, CNNEXT_CPU_ISA)";
#else
  info["cpu_isa_dispatch"] = "none: portable kernels only (this is not an x86-64 build)";
#endif
  info["compiler"] = __VERSION__;
  return info;
}

std::string set_cpu_isa(const std::string& name) {
  cnnext::cpu::Isa isa;
  if (!cnnext::cpu::parse_isa(name.c_str(), isa))
    throw pybind11::value_error("isa must be one of 'avx512', 'avx2', 'baseline', got '" + name + "'");
  return cnnext::cpu::isa_name(cnnext::cpu::set_isa_limit(isa));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "cnnext compiled ops: conv2d (direct, im2col) and max_pool2d for CPU and CUDA";
  m.def("build_info", &build_info, "How this build of cnnext was compiled.");
  m.def("set_cpu_isa", &set_cpu_isa, pybind11::arg("isa"),
        "Limits every CPU kernel (convolution and pooling) to the instruction set `isa`; returns the previous "
        "limit.");
  m.def(
      "cpu_isa", [] { return std::string(cnnext::cpu::isa_name(cnnext::cpu::active_isa())); },
      "The instruction set the CPU kernels use now.");
  m.def(
      "detected_cpu_isa", [] { return std::string(cnnext::cpu::isa_name(cnnext::cpu::detected_isa())); },
      "The best instruction set this CPU supports.");
  m.def(
      "cpu_vendor", [] { return std::string(cnnext::cpu::vendor_name(cnnext::cpu::detected_vendor())); },
      "Who made this CPU ('intel', 'amd', 'other'): the conv2d plan's auto rule reads it.");
  m.def(
      "last_conv2d_family",
      [](const std::string& pass) {
        for (const auto p : {cnnext::cpu::ConvPass::Forward, cnnext::cpu::ConvPass::GradInput,
                             cnnext::cpu::ConvPass::GradWeight})
          if (pass == cnnext::cpu::pass_name(p)) return std::string(cnnext::cpu::family_name(cnnext::cpu::last_family_run(p)));
        throw pybind11::value_error("pass must be one of 'forward', 'grad_input', 'grad_weight', got '" + pass + "'");
      },
      pybind11::arg("pass_"), "The convolution family the CPU kernels last ran for `pass_` (for tests).");
}
