// The Python extension module cnnext._C. Loading it registers the ops
// (torch.ops.cnnext.*); the only Python-level function is build_info().
#include <torch/extension.h>

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
  info["cpu_isa_dispatch"] = "x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA), x86-64 (chosen at load time)";
#else
  info["cpu_isa_dispatch"] = "none (portable build)";
#endif
  info["compiler"] = __VERSION__;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "cnnext compiled ops: conv2d (direct, im2col) and max_pool2d for CPU and CUDA";
  m.def("build_info", &build_info, "How this build of cnnext was compiled.");
}
