// The Python extension module cnnext._C. Loading it registers the ops
// (torch.ops.cnnext.*); its Python functions report how it was built and
// which CPU instruction set the run-time dispatched kernels use.
#include <torch/extension.h>

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
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(CNNEXT_NO_ISA_CLONES)
  info["cpu_isa_dispatch"] =
      "x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA), x86-64 (convolution: chosen at load time; max_pool2d: at run "
      "time, see cnnext.set_cpu_isa)";
#elif defined(CNNEXT_CPU_ARCH)
  info["cpu_isa_dispatch"] = "none: built for -march=" CNNEXT_CPU_ARCH " only (CNNEXT_CPU_ARCH)";
#else
  info["cpu_isa_dispatch"] = "none (portable build)";
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
        "Limits the run-time dispatched CPU kernels to `isa`; returns the previous limit.");
  m.def(
      "cpu_isa", [] { return std::string(cnnext::cpu::isa_name(cnnext::cpu::active_isa())); },
      "The instruction set the run-time dispatched CPU kernels use now.");
  m.def(
      "detected_cpu_isa", [] { return std::string(cnnext::cpu::isa_name(cnnext::cpu::detected_isa())); },
      "The best instruction set this CPU supports.");
}
