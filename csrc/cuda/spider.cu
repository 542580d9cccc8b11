// SPIDER engine (SPEC §6), CUDA: the three passes of csrc/cpu/spider.cpp as multi-tensor launches.
//
// Pure CUDA (no torch headers), like abs_moments.cu: raw-pointer launchers that compile with plain
// `nvcc -c` on a machine without a GPU; spider_glue.cpp turns at::Tensor lists into their tables.
//
// Launch scheme (apex multi_tensor_apply style): tensors are cut into kChunk-element chunks, one
// block per chunk; a launch carries a table of up to kMaxSegs segments (runs of consecutive chunks
// of one tensor) as a by-value kernel argument (< 4 KiB), so no host-to-device copy is needed and
// the launches are asynchronous and graph-capturable. Long lists take ceil(segments / kMaxSegs)
// launches per pass. Reductions (passes 1 and 2) write one partial row per block to a workspace,
// numbered in (tensor, chunk) order; finalize_kernel then adds each tensor's rows in order, so
// the bits never depend on scheduling (no atomics).
//
// Vector loads: where every tensor of a segment is 16-byte aligned, each thread moves kVec
// consecutive elements per 16-byte load or store (walk_chunk in spider_common.cuh); tails and
// unaligned tensors take a scalar loop. The per-thread sums then run over a different element
// order than a scalar walk, still fixed, so the bits stay deterministic.
//
// Per-element math in float32 (fast __expf / __fdividef: the passes are memory bound only if the
// two sigmoids per element stay cheap); sums in float64; per-tensor scalars in float64 from the
// (Σ|x|, Σx², numel) moments rows, exactly as in csrc/cpu/spider.cpp.
#include "spider_common.cuh"

namespace {

using namespace fastpeft::cuda_common;  // block reductions and locate (common.cuh)

constexpr int kMaxSegs = 64;                               // segments per pass launch
constexpr int kMaxRows = 128;                              // tensors per finalize launch

// Pointer roles per pass:   a (written)   b (read)    G (read)
//   1 accumulate             G (fp32)      g           -
//   2 select                 -             θ₀          G
//   3 blend                  w             θ₀          G
struct SegTable {
  static constexpr int kCapacity = kMaxSegs;
  void* a[kMaxSegs];
  const void* b[kMaxSegs];
  const float* G[kMaxSegs];
  int64_t numel[kMaxSegs];   // numel of the whole tensor, bounds the last chunk
  int64_t chunk0[kMaxSegs];  // first chunk of the segment, counted within its tensor
  int block0[kMaxSegs + 1];  // first block of the segment in this launch; [count] = grid
  int tensor[kMaxSegs];      // row of the tensor in the per-tensor tables
  int dtype[kMaxSegs];       // of b (and a in pass 3)
  bool aligned[kMaxSegs];    // every pointer of the segment 16-byte aligned: vector loads
  int count;
  int64_t partial0;          // workspace row of this launch's block 0
};

struct RowTable {
  int64_t first[kMaxRows];  // workspace row of the tensor's first chunk
  int64_t count[kMaxRows];  // number of chunks (0 for an empty tensor)
  double numel[kMaxRows];
  int64_t row0;             // output row of entry 0
};

static_assert(sizeof(SegTable) < 4000 && sizeof(RowTable) < 4000, "kernel params must fit 4 KiB");


template <typename T>
__device__ void accumulate_range(float* __restrict__ G, const T* __restrict__ g, int64_t len,
                                 bool aligned, double& s, double& q) {
  auto add = [&](float& G_j, T g_j) {
    const float v = G_j + to_float(g_j);
    G_j = v;
    s += fabs(static_cast<double>(v));
    q += static_cast<double>(v) * v;
  };
  walk_chunk<T>(
      len, aligned,
      [&](int64_t j) {
        constexpr int N = kVec<T>;
        float Gv[N];
        T gv[N];
        load_vec(G + j, Gv);
        load_vec(g + j, gv);
#pragma unroll
        for (int k = 0; k < N; ++k) add(Gv[k], gv[k]);
        store_vec(G + j, Gv);
      },
      [&](int64_t j) { add(G[j], g[j]); });
}

template <typename T>
__device__ void select_range(const T* __restrict__ t0, const float* __restrict__ G, int64_t len,
                             bool aligned, const RStats& pre, const RStats& ft, double& s,
                             double& cnt) {
  int ci = 0;
  auto add = [&](T t0_j, float G_j) {
    const float c = c_raw(to_float(t0_j), G_j, pre, ft);
    s += c;
    ci += c > 0.f;
  };
  walk_chunk<T>(
      len, aligned,
      [&](int64_t j) {
        constexpr int N = kVec<T>;
        T tv[N];
        float Gv[N];
        load_vec(t0 + j, tv);
        load_vec(G + j, Gv);
#pragma unroll
        for (int k = 0; k < N; ++k) add(tv[k], Gv[k]);
      },
      [&](int64_t j) { add(t0[j], G[j]); });
  cnt = ci;
}

// θ₀ + c (w − θ₀) in float32 (float64 for float64 parameters, whose precision must survive).
template <typename T>
__device__ __forceinline__ T blend_value(T w, T t0, float c) {
  const float t = to_float(t0);
  return from_float<T>(t + c * (to_float(w) - t));
}
template <>
__device__ __forceinline__ double blend_value<double>(double w, double t0, float c) {
  return t0 + c * (w - t0);
}

template <typename T>
__device__ void blend_range(T* __restrict__ w, const T* __restrict__ t0,
                            const float* __restrict__ G, int64_t len, bool aligned,
                            const RStats& pre, const RStats& ft, float inv_m) {
  auto blend = [&](T& w_j, T t0_j, float G_j) {
    const float c = fminf(c_raw(to_float(t0_j), G_j, pre, ft) * inv_m, 1.f);
    w_j = blend_value(w_j, t0_j, c);
  };
  walk_chunk<T>(
      len, aligned,
      [&](int64_t j) {
        constexpr int N = kVec<T>;
        T wv[N], tv[N];
        float Gv[N];
        load_vec(w + j, wv);
        load_vec(t0 + j, tv);
        load_vec(G + j, Gv);
#pragma unroll
        for (int k = 0; k < N; ++k) blend(wv[k], tv[k], Gv[k]);
        store_vec(w + j, wv);
      },
      [&](int64_t j) { blend(w[j], t0[j], G[j]); });
}


__global__ void __launch_bounds__(kThreads) accumulate_kernel(SegTable tab, double* partials) {
  const Where at = locate<kChunk>(tab);
  float* G = static_cast<float*>(tab.a[at.seg]) + at.off;
  double s = 0.0, q = 0.0;
  FASTPEFT_SPIDER_DISPATCH(tab.dtype[at.seg],
      accumulate_range(G, static_cast<const T*>(tab.b[at.seg]) + at.off, at.len,
                       tab.aligned[at.seg], s, q));
  block_sum2_store<kThreads>(s, q, partials + 2 * (tab.partial0 + blockIdx.x));
}

__global__ void __launch_bounds__(kThreads)
select_kernel(SegTable tab, const double* __restrict__ pre, const double* __restrict__ ft,
              double* partials) {
  const Where at = locate<kChunk>(tab);
  const int t = tab.tensor[at.seg];
  const RStats sp = r_stats(pre + 3 * t), sf = r_stats(ft + 3 * t);
  double s = 0.0, cnt = 0.0;
  FASTPEFT_SPIDER_DISPATCH(tab.dtype[at.seg],
      select_range(static_cast<const T*>(tab.b[at.seg]) + at.off, tab.G[at.seg] + at.off, at.len,
                   tab.aligned[at.seg], sp, sf, s, cnt));
  block_sum2_store<kThreads>(s, cnt, partials + 2 * (tab.partial0 + blockIdx.x));
}

__global__ void __launch_bounds__(kThreads)
blend_kernel(SegTable tab, const double* __restrict__ pre, const double* __restrict__ ft,
             const double* __restrict__ sel) {
  const Where at = locate<kChunk>(tab);
  const int t = tab.tensor[at.seg];
  const double count = sel[2 * t + 1];
  if (!(count > 0.0)) return;  // nothing selected: the tensor is left untouched (block-uniform)
  const float inv_m = static_cast<float>(count / sel[2 * t]);
  const RStats sp = r_stats(pre + 3 * t), sf = r_stats(ft + 3 * t);
  FASTPEFT_SPIDER_DISPATCH(tab.dtype[at.seg],
      blend_range(static_cast<T*>(tab.a[at.seg]) + at.off,
                  static_cast<const T*>(tab.b[at.seg]) + at.off, tab.G[at.seg] + at.off, at.len,
                  tab.aligned[at.seg], sp, sf, inv_m));
}

// out[row0 + r, 0:2] = Σ of the tensor's partial rows in chunk order; out[., 2] = numel if width 3.
__global__ void __launch_bounds__(kThreads)
finalize_kernel(RowTable tab, const double* __restrict__ partials, double* out, int width) {
  const int r = blockIdx.x;
  double s, q;
  block_sum_rows<kThreads>(partials + 2 * tab.first[r], tab.count[r], s, q);
  if (threadIdx.x == 0) {
    double* dst = out + width * (tab.row0 + r);
    dst[0] = s;
    dst[1] = q;
    if (width == 3) dst[2] = tab.numel[r];
  }
}


cudaError_t finalize(const int64_t* numels, int n, const double* workspace, double* out,
                     int width, cudaStream_t stream) {
  RowTable rows{};
  int64_t first = 0;
  for (int base = 0; base < n; base += kMaxRows) {
    const int count = n - base < kMaxRows ? n - base : kMaxRows;
    rows.row0 = base;
    for (int r = 0; r < count; ++r) {
      rows.first[r] = first;
      rows.count[r] = num_chunks(numels[base + r]);
      rows.numel[r] = static_cast<double>(numels[base + r]);
      first += rows.count[r];
    }
    finalize_kernel<<<count, kThreads, 0, stream>>>(rows, workspace, out, width);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace

// The four launchers are declared and documented in launchers.h.
extern "C" int64_t fastpeft_spider_workspace_bytes(const int64_t* numels, int n) {
  int64_t chunks = 0;
  for (int i = 0; i < n; ++i) chunks += num_chunks(numels[i]);
  return chunks * 2 * static_cast<int64_t>(sizeof(double));
}

// Pass 1 (accumulate).
extern "C" cudaError_t fastpeft_spider_accumulate_cuda(float* const* G, const void* const* g,
                                                       const int* dtype_codes,
                                                       const int64_t* numels, int n, double* out,
                                                       double* workspace, cudaStream_t stream) {
  if (cudaError_t e = check_inputs(dtype_codes, numels, n); e != cudaSuccess) return e;
  cudaError_t e = for_segments<SegTable>(
      numels, dtype_codes, n,
      [&](SegTable& t, int s, int i) {
        t.a[s] = G[i];
        t.b[s] = g[i];
        t.G[s] = nullptr;
        t.aligned[s] = aligned16(G[i]) && aligned16(g[i]);
      },
      [&](const SegTable& t, unsigned grid) {
        accumulate_kernel<<<grid, kThreads, 0, stream>>>(t, workspace);
      });
  if (e != cudaSuccess) return e;
  return finalize(numels, n, workspace, out, 3, stream);
}

// Pass 2 (select sums).
extern "C" cudaError_t fastpeft_spider_select_cuda(const void* const* theta0,
                                                   const float* const* G, const int* dtype_codes,
                                                   const int64_t* numels, int n,
                                                   const double* pre, const double* ft,
                                                   double* out, double* workspace,
                                                   cudaStream_t stream) {
  if (cudaError_t e = check_inputs(dtype_codes, numels, n); e != cudaSuccess) return e;
  cudaError_t e = for_segments<SegTable>(
      numels, dtype_codes, n,
      [&](SegTable& t, int s, int i) {
        t.a[s] = nullptr;
        t.b[s] = theta0[i];
        t.G[s] = G[i];
        t.aligned[s] = aligned16(theta0[i]) && aligned16(G[i]);
      },
      [&](const SegTable& t, unsigned grid) {
        select_kernel<<<grid, kThreads, 0, stream>>>(t, pre, ft, workspace);
      });
  if (e != cudaSuccess) return e;
  return finalize(numels, n, workspace, out, 2, stream);
}

// Pass 3 (blend).
extern "C" cudaError_t fastpeft_spider_blend_cuda(void* const* w, const void* const* theta0,
                                                  const float* const* G, const int* dtype_codes,
                                                  const int64_t* numels, int n, const double* pre,
                                                  const double* ft, const double* sel,
                                                  cudaStream_t stream) {
  if (cudaError_t e = check_inputs(dtype_codes, numels, n); e != cudaSuccess) return e;
  return for_segments<SegTable>(
      numels, dtype_codes, n,
      [&](SegTable& t, int s, int i) {
        t.a[s] = w[i];
        t.b[s] = theta0[i];
        t.G[s] = G[i];
        t.aligned[s] = aligned16(w[i]) && aligned16(theta0[i]) && aligned16(G[i]);
      },
      [&](const SegTable& t, unsigned grid) {
        blend_kernel<<<grid, kThreads, 0, stream>>>(t, pre, ft, sel);
      });
}

