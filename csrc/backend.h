// Picks the backend (cpu:: or cuda::) of an op by the device of a tensor.
// Without CUDA the ops are registered for the CPU dispatch key only, so a
// CUDA tensor never reaches a CPU-only build.
#pragma once

#ifdef CNNEXT_WITH_CUDA
#define CNNEXT_BACKEND_CALL(tensor, fn, ...) \
  ((tensor).is_cuda() ? ::cnnext::cuda::fn(__VA_ARGS__) : ::cnnext::cpu::fn(__VA_ARGS__))
#else
#define CNNEXT_BACKEND_CALL(tensor, fn, ...) ::cnnext::cpu::fn(__VA_ARGS__)
#endif
