// CUDA abs_moments: row i = (sum |x|, sum x^2, numel) of tensor i, accumulated in double.
//
// Pure CUDA on purpose (no torch headers): the launcher works on raw pointers so it can be
// compiled and tested with plain `nvcc -c`, and reused by code that is not a torch op.
//
// Scheme (deterministic, no atomics):
//   1. partial_kernel: one block per (tensor, 64K-element chunk). Each block writes its two sums
//      to its own row of the [num_blocks, 2] double workspace. Blocks are numbered in (tensor,
//      chunk) order across launches, so tensor i owns a contiguous run of workspace rows.
//   2. finalize_kernel: one block per tensor reduces that run of rows and writes out[i, :].
// Each thread visits a fixed set of elements in a fixed order and the block reduction is a fixed
// shuffle tree, so the result bits depend only on the inputs, never on scheduling.
//
// Tensor tables travel as kernel arguments (by value, < 4 KiB) rather than through a host-to-
// device copy: launches stay asynchronous and are legal inside CUDA graph capture. Tables hold a
// bounded number of entries, so long lists are split over several launches.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "launchers.h"

namespace {

using namespace fastpeft;               // DtypeCode (launchers.h)
using namespace fastpeft::cuda_common;  // block reductions and locate (common.cuh)

constexpr int64_t kChunk = int64_t{1} << 16;            // elements per block in pass 1
constexpr int kThreads = 256;                           // fixed: the reduction tree depends on it
constexpr int kMaxSegs = 64;                            // segments per pass-1 launch
constexpr int kMaxRows = 128;                           // tensors per pass-2 launch
constexpr int64_t kMaxBlocksPerLaunch = int64_t{1} << 30;  // below the 2^31-1 grid.x limit

// A segment is a run of consecutive chunks of one tensor (a tensor larger than one launch's
// block budget is split into several segments).
struct SegTable {
  const void* ptr[kMaxSegs];
  int64_t numel[kMaxSegs];       // numel of the whole tensor, bounds the last chunk
  int64_t chunk0[kMaxSegs];      // first chunk of the segment, counted within its tensor
  int block0[kMaxSegs + 1];      // first block of the segment within this launch; [count] = grid
  int dtype[kMaxSegs];
  int count;
  int64_t partial0;              // workspace row of this launch's block 0
};

struct RowTable {
  int64_t first[kMaxRows];       // workspace row of the tensor's first chunk
  int64_t count[kMaxRows];       // number of chunks (0 for an empty tensor)
  double numel[kMaxRows];
  int64_t row0;                  // output row of entry 0
};

static_assert(sizeof(SegTable) < 4000 && sizeof(RowTable) < 4000, "kernel params must fit 4 KiB");

__device__ __forceinline__ double to_double(float v) { return v; }
__device__ __forceinline__ double to_double(double v) { return v; }
__device__ __forceinline__ double to_double(__half v) { return __half2float(v); }
__device__ __forceinline__ double to_double(__nv_bfloat16 v) { return __bfloat162float(v); }

// Thread t sums elements t, t+kThreads, ... in increasing order. Four loads are issued before
// accumulating to keep more memory requests in flight; the accumulation order is unchanged.
template <typename T>
__device__ void thread_sums(const T* __restrict__ p, int64_t len, double& s, double& q) {
  int64_t j = threadIdx.x;
  for (; j + 3 * kThreads < len; j += 4 * kThreads) {
    const double v0 = to_double(p[j]);
    const double v1 = to_double(p[j + kThreads]);
    const double v2 = to_double(p[j + 2 * kThreads]);
    const double v3 = to_double(p[j + 3 * kThreads]);
    s += fabs(v0); q += v0 * v0;
    s += fabs(v1); q += v1 * v1;
    s += fabs(v2); q += v2 * v2;
    s += fabs(v3); q += v3 * v3;
  }
  for (; j < len; j += kThreads) {
    const double v = to_double(p[j]);
    s += fabs(v); q += v * v;
  }
}

__global__ void __launch_bounds__(kThreads) partial_kernel(SegTable tab, double* partials) {
  const Where at = locate<kChunk>(tab);
  const void* p = tab.ptr[at.seg];
  double s = 0.0, q = 0.0;
  switch (tab.dtype[at.seg]) {  // validated on the host
    case kF32: thread_sums(static_cast<const float*>(p) + at.off, at.len, s, q); break;
    case kF16: thread_sums(static_cast<const __half*>(p) + at.off, at.len, s, q); break;
    case kBF16: thread_sums(static_cast<const __nv_bfloat16*>(p) + at.off, at.len, s, q); break;
    default: thread_sums(static_cast<const double*>(p) + at.off, at.len, s, q); break;
  }
  block_sum2_store<kThreads>(s, q, partials + 2 * (tab.partial0 + blockIdx.x));
}

__global__ void __launch_bounds__(kThreads)
finalize_kernel(RowTable tab, const double* __restrict__ partials, double* out) {
  const int r = blockIdx.x;
  double s, q;
  block_sum_rows<kThreads>(partials + 2 * tab.first[r], tab.count[r], s, q);
  if (threadIdx.x == 0) {
    double* dst = out + 3 * (tab.row0 + r);
    dst[0] = s;
    dst[1] = q;
    dst[2] = tab.numel[r];
  }
}

int64_t num_chunks(int64_t numel) { return (numel + kChunk - 1) / kChunk; }

}  // namespace

// The two launchers are declared and documented in launchers.h.
extern "C" int64_t fastpeft_abs_moments_cuda_workspace_bytes(const int64_t* numels, int n) {
  int64_t chunks = 0;
  for (int i = 0; i < n; ++i) chunks += num_chunks(numels[i]);
  return chunks * 2 * static_cast<int64_t>(sizeof(double));
}

extern "C" cudaError_t fastpeft_abs_moments_cuda(const void* const* ptrs, const int64_t* numels,
                                                 const int* dtype_codes, int n, double* out,
                                                 double* workspace, cudaStream_t stream) {
  for (int i = 0; i < n; ++i) {
    if (numels[i] < 0 || dtype_codes[i] < kF32 || dtype_codes[i] > kF64) {
      return cudaErrorInvalidValue;
    }
  }

  // Pass 1: per-chunk partials.
  SegTable seg{};
  int64_t grid = 0;
  auto flush_segs = [&]() -> cudaError_t {
    if (seg.count == 0) return cudaSuccess;
    seg.block0[seg.count] = static_cast<int>(grid);
    partial_kernel<<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(seg, workspace);
    seg.partial0 += grid;
    seg.count = 0;
    grid = 0;
    return cudaGetLastError();
  };
  for (int i = 0; i < n; ++i) {
    const int64_t chunks = num_chunks(numels[i]);
    for (int64_t done = 0; done < chunks;) {
      if (seg.count == kMaxSegs || grid == kMaxBlocksPerLaunch) {
        if (cudaError_t e = flush_segs(); e != cudaSuccess) return e;
      }
      const int64_t room = kMaxBlocksPerLaunch - grid;
      const int64_t take = chunks - done < room ? chunks - done : room;
      const int s = seg.count++;
      seg.ptr[s] = ptrs[i];
      seg.numel[s] = numels[i];
      seg.chunk0[s] = done;
      seg.block0[s] = static_cast<int>(grid);
      seg.dtype[s] = dtype_codes[i];
      grid += take;
      done += take;
    }
  }
  if (cudaError_t e = flush_segs(); e != cudaSuccess) return e;

  // Pass 2: per-tensor combine in chunk order (also writes zero rows for empty tensors).
  RowTable rows{};
  int64_t first = 0;
  for (int base = 0; base < n; base += kMaxRows) {
    const int count = n - base < kMaxRows ? n - base : kMaxRows;
    rows.row0 = base;
    for (int r = 0; r < count; ++r) {
      const int64_t numel = numels[base + r];
      rows.first[r] = first;
      rows.count[r] = num_chunks(numel);
      rows.numel[r] = static_cast<double>(numel);
      first += rows.count[r];
    }
    finalize_kernel<<<count, kThreads, 0, stream>>>(rows, workspace, out);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}
