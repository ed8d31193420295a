// What the im2col kernels (NCHW: conv2d_im2col_kernel.cpp, channels_last:
// conv2d_im2col_nhwc_kernel.cpp) share: single-threaded GEMMs run as tasks
// fixed by the shape, so that results do not depend on the thread count.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <cstdint>

#include "cache_budget.h"

namespace cnnext {
namespace cpu {
namespace gemm_tasks {

// oneMKL's setter of the calling thread's thread count (C interface; mkl_service.h names it
// mkl_set_num_threads_local), where ATen's GEMM is oneMKL (PyTorch's x86 builds); null elsewhere:
// a weak reference, so the extension loads against any BLAS.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

// Runs oneMKL single-threaded in the calling thread while it lives. A threaded oneMKL GEMM
// splits its reduction into as many parts as it may use threads, even inside a parallel region
// where one thread runs them all, so its rounding would follow torch.set_num_threads.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : previous_(MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0) {}
  ~SingleThreadedBlas() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int previous_;
};

// at::parallel_for over [0, n) whose workers see the caller's thread-local state (in particular
// that autograd is off), since they call ATen's GEMM, single-threaded: the parallelism is over
// the tasks, which follow from the shape alone.
template <typename Fn>
void parallel_gemms(int64_t n, const Fn& fn) {
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    at::ThreadLocalStateGuard guard(caller_state);
    const SingleThreadedBlas single_threaded;
    fn(begin, end);
  });
}

// GEMMs narrower than this many columns run far below the BLAS's speed.
constexpr int64_t kMinGemmColumns = 256;
// Tasks a pass is cut into when the shape allows: enough to keep the cores of
// a desktop busy, few enough that each GEMM stays large.
constexpr int64_t kTargetTasks = 8;
// Fewest rows of a result tile: below this the GEMM's packing dominates.
constexpr int64_t kMinTileRows = 32;

// [begin, end) of part i of n equal parts of [0, size).
struct Range {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};
inline Range part(int64_t size, int64_t parts, int64_t i) { return {i * size / parts, (i + 1) * size / parts}; }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks of whole samples whose GEMMs cover them all at once: S samples, S such
// that a block has at least kMinGemmColumns output pixels where the column
// budget (kColumnBlockBytes, cache_budget.h) allows, then evened out so that no
// block is much smaller than the others. Small planes (a 4 x 4 plane has 16
// pixels) would otherwise give GEMMs a few pixels wide, each of them packing
// the whole weight again.
struct SampleBlocks {
  int64_t batch, size, count;
  SampleBlocks(int64_t batch, int64_t plane, int64_t column_bytes_per_sample) : batch(batch) {
    const int64_t wanted = ceil_div(kMinGemmColumns, std::max<int64_t>(1, plane));
    const int64_t fit = kColumnBlockBytes / std::max<int64_t>(1, column_bytes_per_sample);
    count = ceil_div(batch, std::clamp<int64_t>(std::min(wanted, fit), 1, batch));
    size = ceil_div(batch, count);
  }
  // Block b is samples [first(b), first(b) + samples(b)).
  int64_t first(int64_t b) const { return b * size; }
  int64_t samples(int64_t b) const { return std::min(size, batch - b * size); }
};

// How many tiles to cut `size` rows into so that `tasks_per_tile` x tiles
// reaches kTargetTasks, with tiles of at least `min_rows` rows.
inline int64_t tiles_for(int64_t tasks_per_tile, int64_t size, int64_t min_rows) {
  return std::clamp<int64_t>(ceil_div(kTargetTasks, std::max<int64_t>(1, tasks_per_tile)), 1,
                             std::max<int64_t>(1, size / min_rows));
}

}  // namespace gemm_tasks
}  // namespace cpu
}  // namespace cnnext
