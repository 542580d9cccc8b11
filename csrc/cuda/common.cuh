// Device helpers shared by the deterministic multi-tensor kernels of abs_moments.cu and spider.cu.
//
// Both files use the same scheme: tensors cut into kChunk-element chunks, one kThreads-thread
// block per chunk, blocks found through a by-value table of segments, one (s, q) partial row per
// block, then a fixed-order combine. The pieces of that scheme that decide the result bits (the
// block reduction tree, the block -> chunk mapping) live here once, so the two files cannot drift
// apart. The launch constants stay in each file and come in as template arguments: the two ops
// share a scheme, not a tuning.
//
// Pure CUDA (no torch headers), like the files that include it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fastpeft::cuda_common {

// Fixed-shape block reduction of (s, q) over a kThreads-thread block; the result is valid in
// thread 0. The shuffle tree is fixed, so the bits depend only on the inputs. Call it at most once
// per kernel: the shared scratch is reused without a trailing barrier.
template <int kThreads>
__device__ __forceinline__ void block_sum2(double& s, double& q) {
  static_assert(kThreads % 32 == 0 && kThreads <= 32 * 32, "one warp must hold all warp sums");
  constexpr int kWarps = kThreads / 32;
  __shared__ double sh[2][kWarps];
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_down_sync(0xffffffffu, s, o);
    q += __shfl_down_sync(0xffffffffu, q, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { sh[0][warp] = s; sh[1][warp] = q; }
  __syncthreads();
  if (warp == 0) {
    s = lane < kWarps ? sh[0][lane] : 0.0;
    q = lane < kWarps ? sh[1][lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) {
      s += __shfl_down_sync(0xffffffffu, s, o);
      q += __shfl_down_sync(0xffffffffu, q, o);
    }
  }
}

// Reduces this block's (s, q) and has thread 0 write them to dst[0], dst[1] (the block's own
// workspace row: no atomics, so no scheduling dependence).
template <int kThreads>
__device__ __forceinline__ void block_sum2_store(double s, double q, double* dst) {
  block_sum2<kThreads>(s, q);
  if (threadIdx.x == 0) {
    dst[0] = s;
    dst[1] = q;
  }
}

// Sums `count` consecutive (s, q) rows of `rows` (row k at rows[2k], rows[2k + 1]) over the block:
// thread t adds rows t, t + kThreads, ... in increasing order, then block_sum2. The result is valid
// in thread 0.
template <int kThreads>
__device__ __forceinline__ void block_sum_rows(const double* __restrict__ rows, int64_t count,
                                               double& s, double& q) {
  s = 0.0;
  q = 0.0;
  for (int64_t k = threadIdx.x; k < count; k += kThreads) {
    s += rows[2 * k];
    q += rows[2 * k + 1];
  }
  block_sum2<kThreads>(s, q);
}

// This block's segment, element offset and length within its tensor.
struct Where {
  int seg;
  int64_t off;
  int64_t len;
};

// Finds this block's chunk in a segment table: the last segment with block0 <= blockIdx.x (binary
// search, uniform per block). Table is any struct with `count`, `block0[count + 1]` (first block
// of each segment in this launch), `chunk0[]` (first chunk of each segment within its tensor) and
// `numel[]` (numel of the whole tensor, which bounds the last chunk).
template <int64_t kChunk, typename Table>
__device__ __forceinline__ Where locate(const Table& tab) {
  const int b = blockIdx.x;
  int lo = 0, hi = tab.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tab.block0[mid] <= b) lo = mid; else hi = mid - 1;
  }
  const int64_t off = (tab.chunk0[lo] + (b - tab.block0[lo])) * kChunk;
  const int64_t rest = tab.numel[lo] - off;
  return {lo, off, rest < kChunk ? rest : kChunk};
}

}  // namespace fastpeft::cuda_common
