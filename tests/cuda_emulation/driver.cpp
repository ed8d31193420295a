// Runs the CUDA launchers of csrc/cuda/launchers.h under the emulation of
// cuda_emu.h, on cases prepared by tests/test_cuda_emulation.py.
//
// Usage: cuda_emu_driver DIR
//
// DIR/cases.txt holds one case per line as key=value tokens: `id`, `op`
// (conv_forward, conv_grad_input, conv_grad_weight, conv_grad_bias,
// pool_forward, pool_backward, avg_forward, avg_backward), `dtype` (f32,
// f64, f16, bf16), `algo` (direct, im2col), `bias` (0/1), the shape keys of
// conv_params() / pool_params() / avg_params() below, and optional environment settings (`generic`,
// `budget`, `sms`, see kEnvKeys). Each input is read from DIR/<id>.<name>.bin
// (raw contiguous data of the case's dtype; indices are int64), each output
// is written to DIR/<id>.<name>.bin, and one line "<id> <cudaError_t>" is
// printed per case.
//
// The im2col algorithm is replayed as conv2d_cuda.cpp drives it (the same
// chunk plan, from im2col_chunks.h), with a plain double-precision GEMM
// standing in for cuBLAS. Every buffer is a separate heap allocation of
// exactly its size, and outputs start as NaN bytes, so AddressSanitizer sees
// any access past a buffer and the tests see any element left unwritten.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/im2col_chunks.h"
#include "cuda/launchers.h"

namespace {

using cnnext::AvgPool2dParams;
using cnnext::Conv2dParams;
using cnnext::Pool2dParams;
using cnnext::cuda::launch::acc_t;
namespace launch = cnnext::cuda::launch;
namespace detail = cnnext::cuda::detail;

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "cuda_emu_driver: " << message << "\n";
  std::exit(2);
}

struct Case {
  std::map<std::string, std::string> kv;
  std::string dir;

  bool has(const std::string& key) const { return kv.count(key) != 0; }
  const std::string& str(const std::string& key) const {
    const auto it = kv.find(key);
    if (it == kv.end()) fail("case without key " + key);
    return it->second;
  }
  int64_t num(const std::string& key) const { return std::stoll(str(key)); }
  std::string path(const std::string& name) const { return dir + "/" + str("id") + "." + name + ".bin"; }
};

// Case keys that set an environment variable the launchers read.
const std::map<std::string, std::string> kEnvKeys = {
    {"generic", "CNNEXT_CUDA_DIRECT_GENERIC"},           // direct: force the untiled kernels
    {"budget", "CNNEXT_CUDA_IM2COL_WORKSPACE_BYTES"},    // im2col: chunk size
    {"sms", "CUDA_EMU_SM_COUNT"},                        // multiprocessors of the emulated device
};

template <typename T>
std::vector<T> read(const Case& c, const std::string& name, int64_t count) {
  std::vector<T> data(count);
  std::ifstream in(c.path(name), std::ios::binary);
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(count * sizeof(T)));
  if (!in || in.peek() != std::char_traits<char>::eof()) fail("bad size of " + c.path(name));
  return data;
}

template <typename T>
void write(const Case& c, const std::string& name, const std::vector<T>& data) {
  std::ofstream out(c.path(name), std::ios::binary);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(T)));
  if (!out) fail("cannot write " + c.path(name));
}

// A buffer the kernel must overwrite: all bytes 0xFF (NaN in every float type).
template <typename T>
std::vector<T> unwritten(int64_t count) {
  std::vector<T> data(count);
  std::memset(static_cast<void*>(data.data()), 0xFF, count * sizeof(T));
  return data;
}

Conv2dParams conv_params(const Case& c) {
  Conv2dParams p{};
  p.batch = c.num("N");
  p.in_channels = c.num("C");
  p.out_channels = c.num("K");
  p.groups = c.num("groups");
  p.in_h = c.num("H");
  p.in_w = c.num("W");
  p.out_h = c.num("OH");
  p.out_w = c.num("OW");
  p.kernel_h = c.num("KH");
  p.kernel_w = c.num("KW");
  p.stride_h = c.num("sh");
  p.stride_w = c.num("sw");
  p.pad_top = c.num("ph");
  p.pad_left = c.num("pw");
  p.dilation_h = c.num("dh");
  p.dilation_w = c.num("dw");
  return p;
}

Pool2dParams pool_params(const Case& c) {
  Pool2dParams p{};
  p.planes = c.num("planes");
  p.in_h = c.num("H");
  p.in_w = c.num("W");
  p.out_h = c.num("OH");
  p.out_w = c.num("OW");
  p.kernel_h = c.num("KH");
  p.kernel_w = c.num("KW");
  p.stride_h = c.num("sh");
  p.stride_w = c.num("sw");
  p.pad_h = c.num("ph");
  p.pad_w = c.num("pw");
  p.dilation_h = c.num("dh");
  p.dilation_w = c.num("dw");
  return p;
}

AvgPool2dParams avg_params(const Case& c) {
  AvgPool2dParams p{};
  p.planes = c.num("planes");
  const bool adaptive = c.num("adaptive") != 0, count_include_pad = c.num("cip") != 0;
  p.h = {c.num("H"), c.num("OH"), c.num("KH"), c.num("sh"), c.num("ph"), adaptive, count_include_pad};
  p.w = {c.num("W"), c.num("OW"), c.num("KW"), c.num("sw"), c.num("pw"), adaptive, count_include_pad};
  p.divisor_override = c.num("div");
  return p;
}

// A strided matrix view: element (i, j) at data[i * row + j * col].
template <typename T>
struct View {
  T* data;
  int64_t row, col;
  T& operator()(int64_t i, int64_t j) const { return data[i * row + j * col]; }
};

// c = a * b (or c += a * b), m x n, summed in double and rounded once: the
// stand-in for the cuBLAS calls of conv2d_cuda.cpp.
template <typename X, typename Y, typename Z>
void gemm(int64_t m, int64_t n, int64_t k, View<const X> a, View<const Y> b, View<Z> c, bool accumulate) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = accumulate ? double(detail::to_acc(c(i, j))) : 0.0;
      for (int64_t l = 0; l < k; ++l) s += double(detail::to_acc(a(i, l))) * double(detail::to_acc(b(l, j)));
      c(i, j) = detail::from_acc<Z>(static_cast<acc_t<Z>>(s));
    }
  }
}

// Bytes of one column of the im2col buffers (columns plus the GEMM's other operand), as conv2d_cuda.cpp plans them.
template <typename ColT>
int64_t bytes_per_col(const Conv2dParams& p) {
  return (p.in_channels * p.kernel_plane() + p.out_channels) * int64_t(sizeof(ColT));
}

template <typename T>
cudaError_t forward_im2col(const Conv2dParams& p, const T* input, const T* weight, const T* bias, T* output) {
  const int64_t K = p.col_rows(), cout_pg = p.out_per_group();
  const cnnext::cuda::Chunking ch = cnnext::cuda::plan_chunks(p, bytes_per_col<T>(p));
  std::vector<T> col(p.in_channels * p.kernel_plane() * ch.max_cols), res(p.out_channels * ch.max_cols);
  cudaError_t err = cudaSuccess;
  cnnext::cuda::for_each_chunk(p, ch, [&](int64_t q0, int64_t cols) {
    if (err == cudaSuccess) err = launch::im2col<T, T>(p, input, col.data(), q0, cols, nullptr);
    if (err != cudaSuccess) return;
    for (int64_t g = 0; g < p.groups; ++g) {
      gemm<T, T, T>(cout_pg, cols, K, {weight + g * cout_pg * K, K, 1}, {col.data() + g * K * cols, cols, 1},
                    {res.data() + g * cout_pg * cols, cols, 1}, false);
    }
    err = launch::scatter_output_columns<T>(p, res.data(), bias, output, q0, cols, nullptr);
  });
  return err;
}

template <typename T>
cudaError_t grad_input_im2col(const Conv2dParams& p, const T* grad_output, const T* weight, T* grad_input,
                              int64_t grad_input_numel) {
  const int64_t K = p.col_rows(), cout_pg = p.out_per_group();
  const cnnext::cuda::Chunking ch = cnnext::cuda::plan_chunks(p, bytes_per_col<T>(p));
  std::vector<T> col(p.in_channels * p.kernel_plane() * ch.max_cols), gcol(p.out_channels * ch.max_cols);
  if (!ch.whole_images) std::memset(static_cast<void*>(grad_input), 0, grad_input_numel * sizeof(T));
  cudaError_t err = cudaSuccess;
  cnnext::cuda::for_each_chunk(p, ch, [&](int64_t q0, int64_t cols) {
    if (err == cudaSuccess) err = launch::gather_output_columns<T, T>(p, grad_output, gcol.data(), q0, cols, nullptr);
    if (err != cudaSuccess) return;
    for (int64_t g = 0; g < p.groups; ++g) {
      // col_g = W_g^T gcol_g
      gemm<T, T, T>(K, cols, cout_pg, {weight + g * cout_pg * K, 1, K}, {gcol.data() + g * cout_pg * cols, cols, 1},
                    {col.data() + g * K * cols, cols, 1}, false);
    }
    err = launch::col2im<T>(p, col.data(), grad_input, q0, cols, !ch.whole_images, nullptr);
  });
  return err;
}

template <typename T>
cudaError_t grad_weight_im2col(const Conv2dParams& p, const T* grad_output, const T* input, T* grad_weight) {
  // 16-bit gradients are summed over all chunks in float32 and rounded once.
  constexpr bool narrow = sizeof(T) < sizeof(float);
  using ColT = std::conditional_t<narrow, float, T>;
  const int64_t K = p.col_rows(), cout_pg = p.out_per_group();
  const cnnext::cuda::Chunking ch = cnnext::cuda::plan_chunks(p, bytes_per_col<ColT>(p));
  std::vector<ColT> col(p.in_channels * p.kernel_plane() * ch.max_cols), gcol(p.out_channels * ch.max_cols);
  std::vector<ColT> acc(p.out_channels * K);
  cudaError_t err = cudaSuccess;
  cnnext::cuda::for_each_chunk(p, ch, [&](int64_t q0, int64_t cols) {
    if (err == cudaSuccess) err = launch::im2col<T, ColT>(p, input, col.data(), q0, cols, nullptr);
    if (err == cudaSuccess) err = launch::gather_output_columns<T, ColT>(p, grad_output, gcol.data(), q0, cols, nullptr);
    if (err != cudaSuccess) return;
    for (int64_t g = 0; g < p.groups; ++g) {
      // acc_g += gcol_g col_g^T
      gemm<ColT, ColT, ColT>(cout_pg, K, cols, {gcol.data() + g * cout_pg * cols, cols, 1},
                             {col.data() + g * K * cols, 1, cols}, {acc.data() + g * cout_pg * K, K, 1}, true);
    }
  });
  if (err != cudaSuccess) return err;
  if constexpr (narrow) return launch::convert<float, T>(acc.data(), grad_weight, int64_t(acc.size()), nullptr);
  std::memcpy(static_cast<void*>(grad_weight), acc.data(), acc.size() * sizeof(T));
  return cudaSuccess;
}

template <typename T>
cudaError_t run_case(const Case& c) {
  const std::string op = c.str("op");
  if (op == "avg_forward" || op == "avg_backward") {
    const AvgPool2dParams p = avg_params(c);
    const int64_t in_numel = p.planes * p.in_plane(), out_numel = p.planes * p.out_plane();
    if (op == "avg_forward") {
      const std::vector<T> input = read<T>(c, "input", in_numel);
      std::vector<T> output = unwritten<T>(out_numel);
      const cudaError_t err = launch::avg_pool2d_forward<T>(p, input.data(), output.data(), nullptr);
      write(c, "output", output);
      return err;
    }
    const std::vector<T> grad_output = read<T>(c, "grad_output", out_numel);
    std::vector<T> grad_input = unwritten<T>(in_numel);
    const cudaError_t err = launch::avg_pool2d_backward<T>(p, grad_output.data(), grad_input.data(), nullptr);
    write(c, "grad_input", grad_input);
    return err;
  }
  if (op == "pool_forward" || op == "pool_backward") {
    const Pool2dParams p = pool_params(c);
    const int64_t in_numel = p.planes * p.in_plane(), out_numel = p.planes * p.out_plane();
    if (op == "pool_forward") {
      const std::vector<T> input = read<T>(c, "input", in_numel);
      std::vector<T> output = unwritten<T>(out_numel);
      std::vector<int64_t> indices = unwritten<int64_t>(out_numel);
      const cudaError_t err = launch::max_pool2d_forward<T>(p, input.data(), output.data(), indices.data(), nullptr);
      write(c, "output", output);
      write(c, "indices", indices);
      return err;
    }
    const std::vector<T> grad_output = read<T>(c, "grad_output", out_numel);
    const std::vector<int64_t> indices = read<int64_t>(c, "indices", out_numel);
    std::vector<T> grad_input = unwritten<T>(in_numel);
    std::vector<float> scratch(sizeof(T) < sizeof(float) ? in_numel : 0);
    const cudaError_t err = launch::max_pool2d_backward<T>(p, grad_output.data(), indices.data(), grad_input.data(),
                                                           scratch.empty() ? nullptr : scratch.data(), nullptr);
    write(c, "grad_input", grad_input);
    return err;
  }

  const Conv2dParams p = conv_params(c);
  const int64_t in_numel = p.batch * p.in_channels * p.in_plane();
  const int64_t out_numel = p.batch * p.out_channels * p.out_plane();
  const int64_t w_numel = p.out_channels * p.in_per_group() * p.kernel_plane();
  const bool direct = !c.has("algo") || c.str("algo") == "direct";
  cudaError_t err = cudaSuccess;
  if (op == "conv_forward") {
    const std::vector<T> input = read<T>(c, "input", in_numel), weight = read<T>(c, "weight", w_numel);
    const std::vector<T> bias = c.num("bias") != 0 ? read<T>(c, "bias", p.out_channels) : std::vector<T>();
    const T* bias_ptr = bias.empty() ? nullptr : bias.data();
    std::vector<T> output = unwritten<T>(out_numel);
    err = direct ? launch::conv2d_direct_forward<T>(p, input.data(), weight.data(), bias_ptr, output.data(), nullptr)
                 : forward_im2col<T>(p, input.data(), weight.data(), bias_ptr, output.data());
    write(c, "output", output);
  } else if (op == "conv_grad_input") {
    const std::vector<T> grad_output = read<T>(c, "grad_output", out_numel), weight = read<T>(c, "weight", w_numel);
    std::vector<T> grad_input = unwritten<T>(in_numel);
    err = direct ? launch::conv2d_direct_grad_input<T>(p, grad_output.data(), weight.data(), grad_input.data(), nullptr)
                 : grad_input_im2col<T>(p, grad_output.data(), weight.data(), grad_input.data(), in_numel);
    write(c, "grad_input", grad_input);
  } else if (op == "conv_grad_weight") {
    const std::vector<T> grad_output = read<T>(c, "grad_output", out_numel), input = read<T>(c, "input", in_numel);
    std::vector<T> grad_weight = unwritten<T>(w_numel);
    if (direct) {
      const launch::GradWeightPlan plan = launch::conv2d_direct_grad_weight_plan<T>(p);
      std::vector<acc_t<T>> workspace(plan.workspace_elems);
      err = launch::conv2d_direct_grad_weight<T>(p, plan, grad_output.data(), input.data(), grad_weight.data(),
                                                 workspace.empty() ? nullptr : workspace.data(), nullptr);
    } else {
      err = grad_weight_im2col<T>(p, grad_output.data(), input.data(), grad_weight.data());
    }
    write(c, "grad_weight", grad_weight);
  } else if (op == "conv_grad_bias") {
    const std::vector<T> grad_output = read<T>(c, "grad_output", out_numel);
    std::vector<T> grad_bias = unwritten<T>(p.out_channels);
    err = launch::conv2d_grad_bias<T>(p.batch, p.out_channels, p.out_plane(), grad_output.data(), grad_bias.data(),
                                      nullptr);
    write(c, "grad_bias", grad_bias);
  } else {
    fail("unknown op " + op);
  }
  return err;
}

cudaError_t dispatch(const Case& c) {
  const std::string dtype = c.str("dtype");
  if (dtype == "f32") return run_case<float>(c);
  if (dtype == "f64") return run_case<double>(c);
  if (dtype == "f16") return run_case<__half>(c);
  if (dtype == "bf16") return run_case<__nv_bfloat16>(c);
  fail("unknown dtype " + dtype);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) fail("usage: cuda_emu_driver DIR");
  std::ifstream cases(std::string(argv[1]) + "/cases.txt");
  if (!cases) fail(std::string("cannot read ") + argv[1] + "/cases.txt");
  std::string line;
  while (std::getline(cases, line)) {
    if (line.empty()) continue;
    Case c;
    c.dir = argv[1];
    std::istringstream tokens(line);
    std::string token;
    while (tokens >> token) {
      const size_t eq = token.find('=');
      if (eq == std::string::npos) fail("bad token " + token);
      c.kv[token.substr(0, eq)] = token.substr(eq + 1);
    }
    for (const auto& [key, var] : kEnvKeys) {
      if (c.has(key)) {
        setenv(var.c_str(), c.str(key).c_str(), 1);
      } else {
        unsetenv(var.c_str());
      }
    }
    const cudaError_t err = dispatch(c);
    std::printf("%s %d\n", c.str("id").c_str(), static_cast<int>(err));
    std::fflush(stdout);
  }
  return 0;
}
