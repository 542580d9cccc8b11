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

// 16-byte vector access. kVec<T> elements per vector: 16 bytes of the narrowest operand, so 8
// half-precision elements (their fp32 G then takes two words) or 4 wider ones (fp32 G: one word).
template <typename T>
constexpr int kVec = sizeof(T) >= 4 ? 4 : 8;

// N elements of T through 16-byte words (N · sizeof(T) a multiple of 16). A union, not memcpy:
// nvcc split memcpy-packed stores back into 2- and 4-byte ones.
template <typename T, int N>
union Words {
  static_assert((N * sizeof(T)) % 16 == 0, "whole 16-byte words");
  uint4 word[N * sizeof(T) / 16];
  T elem[N];
};

template <typename T, int N>
__device__ __forceinline__ void load_vec(const T* p, T (&out)[N]) {
  Words<T, N> u;
#pragma unroll
  for (int k = 0; k < N * static_cast<int>(sizeof(T)) / 16; ++k) {
    u.word[k] = reinterpret_cast<const uint4*>(p)[k];
  }
#pragma unroll
  for (int k = 0; k < N; ++k) out[k] = u.elem[k];
}
template <typename T, int N>
__device__ __forceinline__ void store_vec(T* p, const T (&in)[N]) {
  Words<T, N> u;
#pragma unroll
  for (int k = 0; k < N; ++k) u.elem[k] = in[k];
#pragma unroll
  for (int k = 0; k < N * static_cast<int>(sizeof(T)) / 16; ++k) {
    reinterpret_cast<uint4*>(p)[k] = u.word[k];
  }
}

// Walks the len elements of this block's chunk: vector(j) for each kVec<T>-element vector starting
// at j where every pointer of the segment is 16-byte aligned (the host checks; chunk offsets are
// multiples of kChunk, so then every chunk is), then scalar(j) for the tail (numel not a multiple
// of kVec) or for the whole chunk of an unaligned tensor. Thread t takes vectors t, t + kThreads, ...
// so consecutive threads read consecutive 16-byte words.
template <typename T, typename Vector, typename Scalar>
__device__ __forceinline__ void walk_chunk(int64_t len, bool aligned, Vector vector,
                                           Scalar scalar) {
  int64_t done = 0;
  if (aligned) {
    const int64_t vectors = len / kVec<T>;
    for (int64_t q = threadIdx.x; q < vectors; q += kThreads) vector(q * kVec<T>);
    done = vectors * kVec<T>;
  }
  for (int64_t j = done + threadIdx.x; j < len; j += kThreads) scalar(j);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

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
