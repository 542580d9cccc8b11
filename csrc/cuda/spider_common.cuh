// Device pieces shared by the SPIDER passes (spider.cu) and SpiderAdamW's fused pass
// (spider_adamw.cu): element conversions, R's per-tensor scalars and c_raw, the chunking and the
// segment-table builder. Pure CUDA, no torch headers. Everything sits in an anonymous namespace
// (each .cu file is its own translation unit with its own kernels).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "launchers.h"

namespace {

using namespace fastpeft;  // DtypeCode (launchers.h)

constexpr int64_t kChunk = int64_t{1} << 16;               // elements per block
constexpr int kThreads = 256;                              // fixed: the reduction tree uses it
constexpr int64_t kMaxBlocksPerLaunch = int64_t{1} << 30;  // below the 2^31-1 grid.x limit

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(double v) { return static_cast<float>(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

struct RStats {
  float mean;
  float scale;  // 1 / (std + 1e-12)
  bool zero;    // all-zero tensor: R = 0
};

// Same formula as r_stats in csrc/cpu/spider.cpp (unbiased std, std := 0 for numel <= 1).
__device__ RStats r_stats(const double* m) {
  const double s1 = m[0], s2 = m[1], n = m[2];
  const double mean = n > 0 ? s1 / n : 0.0;
  double var = n > 1 ? (s2 - s1 * mean) / (n - 1) : 0.0;
  if (!(var > 0.0)) var = 0.0;
  return {static_cast<float>(mean), static_cast<float>(1.0 / (sqrt(var) + 1e-12)), !(s1 > 0.0)};
}

// Overflow-free sigmoid: exp of −|z| only.
__device__ __forceinline__ float importance(float a, const RStats& s) {
  const float z = (a - s.mean) * s.scale;
  const float e = __expf(-fabsf(z));
  const float r = __fdividef(z >= 0.f ? 1.f : e, 1.f + e);
  return s.zero ? 0.f : r;
}

__device__ __forceinline__ float c_raw(float t0, float g, const RStats& pre, const RStats& ft) {
  const float ip = importance(fabsf(t0), pre);
  const float ift = importance(fabsf(g), ft);
  return ip < ift ? __fdividef(ift, ip + ift) : 0.f;
}

#define FASTPEFT_SPIDER_DISPATCH(code, ...)             \
  switch (code) { /* validated on the host */           \
    case kF32: { using T = float; __VA_ARGS__; } break;  \
    case kF16: { using T = __half; __VA_ARGS__; } break; \
    case kBF16: { using T = __nv_bfloat16; __VA_ARGS__; } break; \
    default: { using T = double; __VA_ARGS__; } break;   \
  }

int64_t num_chunks(int64_t numel) { return (numel + kChunk - 1) / kChunk; }

cudaError_t check_inputs(const int* dtype_codes, const int64_t* numels, int n) {
  for (int i = 0; i < n; ++i) {
    if (numels[i] < 0 || dtype_codes[i] < kF32 || dtype_codes[i] > kF64) {
      return cudaErrorInvalidValue;
    }
  }
  return cudaSuccess;
}

// Builds segment tables over all chunks of the n tensors and calls launch(table, grid) for each

// Builds segment tables over all chunks of the n tensors and calls launch(table, grid) for each
// full table. fill(table, slot, i) sets the pass-specific pointers of tensor i. Table: a
// struct with kCapacity segments of numel/chunk0/block0/tensor/dtype, count and partial0.
template <typename Table, typename Fill, typename Launch>
cudaError_t for_segments(const int64_t* numels, const int* dtype_codes, int n, Fill fill,
                         Launch launch) {
  Table seg{};
  int64_t grid = 0;
  auto flush = [&]() -> cudaError_t {
    if (seg.count == 0) return cudaSuccess;
    seg.block0[seg.count] = static_cast<int>(grid);
    launch(seg, static_cast<unsigned>(grid));
    seg.partial0 += grid;
    seg.count = 0;
    grid = 0;
    return cudaGetLastError();
  };
  for (int i = 0; i < n; ++i) {
    const int64_t chunks = num_chunks(numels[i]);
    for (int64_t done = 0; done < chunks;) {
      if (seg.count == Table::kCapacity || grid == kMaxBlocksPerLaunch) {
        if (cudaError_t e = flush(); e != cudaSuccess) return e;
      }
      const int64_t room = kMaxBlocksPerLaunch - grid;
      const int64_t take = chunks - done < room ? chunks - done : room;
      const int s = seg.count++;
      fill(seg, s, i);
      seg.numel[s] = numels[i];
      seg.chunk0[s] = done;
      seg.block0[s] = static_cast<int>(grid);
      seg.tensor[s] = i;
      seg.dtype[s] = dtype_codes[i];
      grid += take;
      done += take;
    }
  }
  return flush();
}

}  // namespace
