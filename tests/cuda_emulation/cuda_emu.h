// A CPU emulation of the CUDA execution model, for tests only: it lets a host
// C++ compiler build csrc/cuda/*.cu unchanged and run the kernels, so that
// their results can be checked against the CPU backend and their memory
// accesses and barriers checked by AddressSanitizer and ThreadSanitizer.
//
// Execution model:
//  * A launch runs its blocks one after another. Each block's threads are
//    real OS threads (one per CUDA thread, kept from launch to launch), so a missing __syncthreads() is a real data race that
//    ThreadSanitizer reports, and code that assumes the threads of a warp
//    run in lockstep gets no such guarantee here either.
//  * __syncthreads() is a barrier among the block's threads that have not
//    exited; warp shuffles exchange values through a barrier among the
//    warp's 32 threads.
//  * Dynamic shared memory is a fresh heap allocation of exactly the launch's
//    byte count per block (AddressSanitizer sees any overrun), filled with
//    0xFF bytes so that reading it before writing gives NaNs. Static
//    __shared__ variables are function-local statics: sound because only
//    one block runs at a time.
//  * "Device" memory is host memory; launches and memsets are synchronous.
//  * Launch configurations past the device limits (threads per block, grid
//    y/z, 48 KiB of dynamic shared memory without opt-in) fail with
//    cudaErrorInvalidConfiguration, reported by cudaGetLastError().
//  * __half and __nv_bfloat16 have no implicit conversions and no
//    operators, as under the __CUDA_NO_HALF_* / __CUDA_NO_BFLOAT16_* flags
//    that torch builds kernels with: only the conversion intrinsics.
//
// Only what the project's kernels use is provided.
#pragma once

#include <atomic>
#include <bit>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <math.h>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

// ---------------------------------------------------------------------------
// Qualifiers

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static

// ---------------------------------------------------------------------------
// Runtime API types

enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
};
typedef enum cudaError cudaError_t;

enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
};

struct CUstream_st;
typedef CUstream_st* cudaStream_t;

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

// The built-in variables, per emulated thread.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace cuda_emu {

// The error the next cudaGetLastError() returns.
inline std::atomic<int> last_error{cudaSuccess};

// A barrier among `count` threads; a thread that leaves for good calls
// drop(), so that the others no longer wait for it (CUDA threads that have
// exited do not hold up __syncthreads()). Waiting threads sleep on a futex
// (std::atomic::wait): a block has far more threads than the machine has cores.
class Barrier {
 public:
  explicit Barrier(unsigned int count) : state_(uint64_t(count) << 32) {}

  // Returns once every participating thread has arrived; the last to arrive
  // runs on_complete() before releasing the others.
  template <typename F>
  void arrive_and_wait(F&& on_complete) {
    const uint32_t phase = phase_.load(std::memory_order_acquire);
    if (update(0, 1)) {
      on_complete();
      release();
      return;
    }
    while (phase_.load(std::memory_order_acquire) == phase) phase_.wait(phase, std::memory_order_acquire);
  }
  void arrive_and_wait() {
    arrive_and_wait([] {});
  }

  void drop() {
    if (update(1, 0)) release();
  }

 private:
  // Applies expected -= leave, arrived += arrive to the packed state; true
  // (and arrived reset to 0) when that completes the phase.
  bool update(uint32_t leave, uint32_t arrive) {
    uint64_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
      const uint32_t expected = uint32_t(s >> 32) - leave, arrived = uint32_t(s) + arrive;
      const bool complete = arrived > 0 && arrived == expected;
      const uint64_t next = (uint64_t(expected) << 32) | (complete ? 0 : arrived);
      if (state_.compare_exchange_weak(s, next, std::memory_order_acq_rel)) return complete;
    }
  }
  void release() {
    phase_.fetch_add(1, std::memory_order_release);
    phase_.notify_all();
  }

  std::atomic<uint64_t> state_;  // expected threads << 32 | arrived threads
  std::atomic<uint32_t> phase_{0};
};

// What the threads of the running block share.
struct Block {
  struct Warp {
    explicit Warp(unsigned int n) : sync(n), lanes(n) {}
    Barrier sync;
    unsigned int lanes;
    // One value per lane for shuffles, double-buffered: a lane may write the
    // next shuffle's value while a slower lane still reads this one's.
    alignas(8) unsigned char slots[2][32][8];
  };

  Block(unsigned int threads, size_t smem_bytes) : sync(threads), shared(new unsigned char[smem_bytes]) {
    std::memset(shared.get(), 0xFF, smem_bytes);
    for (unsigned int first = 0; first < threads; first += 32) {
      warps.push_back(std::make_unique<Warp>(threads - first < 32 ? threads - first : 32));
    }
  }

  Barrier sync;
  std::unique_ptr<unsigned char[]> shared;  // exactly the launch's dynamic shared memory
  std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Block* current_block = nullptr;
inline thread_local unsigned int linear_thread = 0;  // threadIdx flattened, x fastest
inline thread_local unsigned int shuffles = 0;       // shuffles of this thread in its block

inline Block::Warp& current_warp() { return *current_block->warps[linear_thread / 32]; }

// Worker threads kept from launch to launch: creating a block's worth of
// threads per launch would dominate the run time.
class Workers {
 public:
  // Runs body(t) for every t in [0, n), each on its own thread; returns when all are done.
  void run(unsigned int n, const std::function<void(unsigned int)>& body) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (threads_.size() < n) {
      const unsigned int t = static_cast<unsigned int>(threads_.size());
      threads_.emplace_back([this, t] { loop(t); });
    }
    job_ = &body;
    active_ = n;
    pending_ = n;
    ++generation_;
    start_.notify_all();
    done_.wait(lock, [&] { return pending_ == 0; });
  }

  ~Workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      ++generation_;
    }
    start_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  void loop(unsigned int t) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      start_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (stop_) return;
      if (t >= active_) continue;
      const std::function<void(unsigned int)>* job = job_;
      lock.unlock();
      (*job)(t);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable start_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(unsigned int)>* job_ = nullptr;
  unsigned int active_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

inline Workers workers;

// Device limits the launch configuration is checked against.
constexpr unsigned int kMaxThreadsPerBlock = 1024;
constexpr unsigned int kMaxBlockZ = 64;
constexpr unsigned int kMaxGridYZ = 65535;
constexpr size_t kMaxDynamicShared = 48 * 1024;

// Streaming multiprocessors the emulated device reports: CUDA_EMU_SM_COUNT,
// else 132 (an H100 SXM), which the launchers use to size their grids.
inline int multiprocessor_count() {
  const char* v = std::getenv("CUDA_EMU_SM_COUNT");
  const int n = v != nullptr ? std::atoi(v) : 0;
  return n > 0 ? n : 132;
}

inline bool valid_config(dim3 grid, dim3 block, size_t smem) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  return grid.x > 0 && grid.y > 0 && grid.z > 0 && threads > 0 && threads <= kMaxThreadsPerBlock &&
         block.z <= kMaxBlockZ && grid.y <= kMaxGridYZ && grid.z <= kMaxGridYZ && smem <= kMaxDynamicShared;
}

// Runs kernel(args...) over the grid, one block at a time; returns when every block is done.
template <typename... Params, typename... Args>
void run(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, Args&&... args) {
  if (!valid_config(grid, block, smem)) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  // The kernel's parameters, converted once as the CUDA runtime copies them;
  // each thread's call receives its own copy.
  const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  const unsigned int threads = block.x * block.y * block.z;
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  std::unique_ptr<Block> state = std::make_unique<Block>(threads, smem);
  Barrier between_blocks(threads);

  workers.run(threads, [&](unsigned int t) {
    linear_thread = t;
    threadIdx = {t % block.x, t / block.x % block.y, t / (block.x * block.y)};
    blockDim = block;
    gridDim = grid;
    for (uint64_t b = 0; b < blocks; ++b) {
      current_block = state.get();
      shuffles = 0;
      blockIdx = {unsigned(b % grid.x), unsigned(b / grid.x % grid.y), unsigned(b / (uint64_t(grid.x) * grid.y))};
      std::apply(kernel, params);
      current_block->sync.drop();
      current_warp().sync.drop();
      // The last thread to leave the block sets up the next one.
      between_blocks.arrive_and_wait([&] {
        if (b + 1 < blocks) state = std::make_unique<Block>(threads, smem);
      });
    }
    current_block = nullptr;
  });
}

template <typename Kernel>
struct Launch {
  Kernel kernel;
  dim3 grid, block;
  size_t smem;
  template <typename... Args>
  void operator()(Args&&... args) const {
    run(kernel, grid, block, smem, std::forward<Args>(args)...);
  }
};

template <typename... Params>
Launch<void (*)(Params...)> launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, void (*kernel)(Params...)) {
  return {kernel, grid, block, smem};
}

// Value of `v` in lane `src` of the calling thread's warp. Every live lane
// of the warp must call it (as the full masks the kernels pass promise).
template <typename T>
T exchange(unsigned int mask, T v, unsigned int src) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  Block::Warp& warp = current_warp();
  const unsigned int full = warp.lanes == 32 ? 0xffffffffu : (1u << warp.lanes) - 1;
  if ((mask & full) != full) {
    std::fprintf(stderr, "cuda_emu: shuffle with a partial mask 0x%x is not emulated\n", mask);
    std::abort();
  }
  auto& slots = warp.slots[shuffles++ % 2];
  std::memcpy(slots[linear_thread % 32], &v, sizeof(T));
  warp.sync.arrive_and_wait();
  T result = v;
  if (src < warp.lanes) std::memcpy(&result, slots[src], sizeof(T));
  return result;
}

}  // namespace cuda_emu

#define CNNEXT_LAUNCH(grid, block, smem, stream, ...) ::cuda_emu::launch(grid, block, smem, stream, __VA_ARGS__)
#define CNNEXT_DYNAMIC_SHARED(name) unsigned char* const name = ::cuda_emu::current_block->shared.get()

// ---------------------------------------------------------------------------
// Runtime API functions

inline cudaError_t cudaGetLastError() { return static_cast<cudaError_t>(cuda_emu::last_error.exchange(cudaSuccess)); }

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  if (attr != cudaDevAttrMultiProcessorCount) return cudaErrorInvalidValue;
  *value = cuda_emu::multiprocessor_count();
  return cudaSuccess;
}

inline cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) {
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

// ---------------------------------------------------------------------------
// Device functions

inline void __syncthreads() { cuda_emu::current_block->sync.arrive_and_wait(); }

template <typename T>
T __shfl_down_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
  const unsigned int lane = cuda_emu::linear_thread % 32;
  const unsigned int src = lane % width + delta < unsigned(width) ? lane + delta : lane;
  return cuda_emu::exchange(mask, v, src);
}

template <typename T>
T atomicAdd(T* address, T v) {
  return std::atomic_ref<T>(*address).fetch_add(v);
}

template <typename T>
T __ldg(const T* p) {
  return *p;
}

template <typename T>
T min(T a, T b) {
  return b < a ? b : a;
}

// ---------------------------------------------------------------------------
// 16-bit floating-point types: storage and conversions only.

struct __half {
  unsigned short bits;
};
struct __nv_bfloat16 {
  unsigned short bits;
};

inline __half __ushort_as_half(unsigned short bits) { return {bits}; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short bits) { return {bits}; }

// IEEE binary16 through the compiler's _Float16 (round to nearest even).
inline float __half2float(__half h) { return static_cast<float>(std::bit_cast<_Float16>(h.bits)); }
inline __half __float2half_rn(float f) { return {std::bit_cast<unsigned short>(static_cast<_Float16>(f))}; }

// bfloat16 is the upper half of a float32: widening is exact, narrowing
// rounds to nearest even and keeps NaNs quiet NaNs.
inline float __bfloat162float(__nv_bfloat16 h) { return std::bit_cast<float>(uint32_t(h.bits) << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<unsigned short>((u >> 16) | 0x0040u)};
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return {static_cast<unsigned short>(rounded >> 16)};
}
