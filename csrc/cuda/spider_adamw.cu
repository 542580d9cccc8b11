// SpiderAdamW's fused pass, CUDA: csrc/cpu/spider_adamw.cpp's AdamW update + SPIDER blend as one
// multi-tensor launch set over spider.cu's chunking (one block per kChunk-element chunk, segment
// tables passed by value), after spider.cu's passes 1 and 2.
//
// Vector loads: each thread handles kVec consecutive elements with 16-byte loads and stores
// (uint4) of w, g, m, v, θ₀ and G wherever the host found all six tensors of a segment 16-byte
// aligned (walk_chunk in spider_common.cuh); the tail of a tensor and unaligned tensors take a
// scalar loop. Per-element math as in
// spider.cu (fast __expf / __fdividef for c_raw) with IEEE sqrt and division for AdamW, float32
// (float64 for float64 parameters); per-tensor AdamW scalars from a [n, 6] float64 table.
#include <type_traits>

#include "spider_common.cuh"

namespace {

using namespace fastpeft::cuda_common;  // locate (common.cuh)

constexpr int kFusedSegs = 32;  // segments per launch: six pointers each must fit 4 KiB

struct FusedTable {
  static constexpr int kCapacity = kFusedSegs;
  void* w[kFusedSegs];
  const void* g[kFusedSegs];
  void* m[kFusedSegs];
  void* v[kFusedSegs];
  const void* t0[kFusedSegs];
  const float* G[kFusedSegs];
  int64_t numel[kFusedSegs];
  int64_t chunk0[kFusedSegs];
  int block0[kFusedSegs + 1];
  int tensor[kFusedSegs];
  int dtype[kFusedSegs];
  bool aligned[kFusedSegs];  // all six pointers 16-byte aligned: vector loads
  int count;
  int64_t partial0;  // unused (no reduction); for_segments keeps it
};

static_assert(sizeof(FusedTable) < 4000, "kernel params must fit 4 KiB");

// Arithmetic type of a storage type: float, except float64 parameters keep float64.
template <typename T>
using Math = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T>
__device__ __forceinline__ Math<T> up(T x) {
  if constexpr (std::is_same_v<T, double>) return x; else return to_float(x);
}
template <typename T>
__device__ __forceinline__ T down(Math<T> x) {
  if constexpr (std::is_same_v<T, double>) return x; else return from_float<T>(x);
}

template <typename F>
struct AdamW {
  F decay, step_size, one_minus_beta1, beta2, one_minus_beta2, eps, bc2_sqrt;
  __device__ explicit AdamW(const double* h)
      : decay(static_cast<F>(h[0])), step_size(static_cast<F>(h[1])),
        one_minus_beta1(static_cast<F>(1.0 - h[2])), beta2(static_cast<F>(h[3])),
        one_minus_beta2(static_cast<F>(1.0 - h[3])), eps(static_cast<F>(h[4])),
        bc2_sqrt(static_cast<F>(h[5])) {}
};

// One element: AdamW's update (torch.optim.AdamW's order of operations), then the blend when
// inv_m >= 0 (the tensor has a selected element).
template <typename T>
__device__ __forceinline__ void fused_element(T& w, T g, T& m, T& v, T t0, float G,
                                              const AdamW<Math<T>>& h, const RStats& pre,
                                              const RStats& ft, float inv_m) {
  using F = Math<T>;
  const F gf = up(g), mf0 = up(m);
  const F mf = mf0 + h.one_minus_beta1 * (gf - mf0);
  const F vf = up(v) * h.beta2 + h.one_minus_beta2 * (gf * gf);
  F x = up(w) * h.decay - h.step_size * (mf / (sqrt(vf) / h.bc2_sqrt + h.eps));
  if (inv_m >= 0.f) {
    const F a = up(t0);
    const float c = fminf(c_raw(to_float(t0), G, pre, ft) * inv_m, 1.f);
    x = a + static_cast<F>(c) * (x - a);
  }
  m = down<T>(mf);
  v = down<T>(vf);
  w = down<T>(x);
}

template <typename T>
__device__ void fused_range(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ m,
                            T* __restrict__ v, const T* __restrict__ t0,
                            const float* __restrict__ G, int64_t len, bool aligned,
                            const AdamW<Math<T>>& h, const RStats& pre, const RStats& ft,
                            float inv_m) {
  const bool blend = inv_m >= 0.f;
  walk_chunk<T>(
      len, aligned,
      [&](int64_t j) {
        constexpr int N = kVec<T>;
        T wv[N], gv[N], mv[N], vv[N], tv[N];
        float Gv[N];
        load_vec(w + j, wv);
        load_vec(g + j, gv);
        load_vec(m + j, mv);
        load_vec(v + j, vv);
        if (blend) {
          load_vec(t0 + j, tv);
          load_vec(G + j, Gv);
        }
#pragma unroll
        for (int k = 0; k < N; ++k) {
          fused_element(wv[k], gv[k], mv[k], vv[k], tv[k], Gv[k], h, pre, ft, inv_m);
        }
        store_vec(w + j, wv);
        store_vec(m + j, mv);
        store_vec(v + j, vv);
      },
      [&](int64_t j) {
        T wj = w[j], mj = m[j], vj = v[j];
        // θ₀ and G are read only where the blend needs them (the zero stand-ins are never used).
        const T tj = blend ? t0[j] : down<T>(0);
        fused_element(wj, g[j], mj, vj, tj, blend ? G[j] : 0.f, h, pre, ft, inv_m);
        w[j] = wj;
        m[j] = mj;
        v[j] = vj;
      });
}

// NOTE: ptxas (CUDA 13.0, sm_90) gives this 128 registers and no spills, so 2 blocks (16 warps)
// per SM; each thread keeps 16-byte loads of six streams in flight. Capping it at 3 blocks per SM
// (80 registers) spilled 84 bytes; untimed, no GPU was available.
__global__ void __launch_bounds__(kThreads)
adamw_blend_kernel(FusedTable tab, const double* __restrict__ hyper,
                   const double* __restrict__ pre, const double* __restrict__ ft,
                   const double* __restrict__ sel) {
  const Where at = locate<kChunk>(tab);
  const int s = at.seg, t = tab.tensor[s];
  const double count = sel[2 * t + 1];
  // inv_m < 0: nothing selected, AdamW alone (block-uniform, so no divergence).
  const float inv_m = count > 0.0 ? static_cast<float>(count / sel[2 * t]) : -1.f;
  const RStats sp = r_stats(pre + 3 * t), sf = r_stats(ft + 3 * t);
  const double* h = hyper + 6 * t;
  FASTPEFT_SPIDER_DISPATCH(tab.dtype[s],
      fused_range(static_cast<T*>(tab.w[s]) + at.off,
                  static_cast<const T*>(tab.g[s]) + at.off, static_cast<T*>(tab.m[s]) + at.off,
                  static_cast<T*>(tab.v[s]) + at.off, static_cast<const T*>(tab.t0[s]) + at.off,
                  tab.G[s] + at.off, at.len, tab.aligned[s], AdamW<Math<T>>(h), sp, sf, inv_m));
}

}  // namespace

// Declared and documented in launchers.h.
extern "C" cudaError_t fastpeft_spider_adamw_blend_cuda(
    void* const* w, const void* const* g, void* const* m, void* const* v,
    const void* const* theta0, const float* const* G, const int* dtype_codes,
    const int64_t* numels, int n, const double* hyper, const double* pre, const double* ft,
    const double* sel, cudaStream_t stream) {
  if (cudaError_t e = check_inputs(dtype_codes, numels, n); e != cudaSuccess) return e;
  return for_segments<FusedTable>(
      numels, dtype_codes, n,
      [&](FusedTable& t, int s, int i) {
        t.w[s] = w[i];
        t.g[s] = g[i];
        t.m[s] = m[i];
        t.v[s] = v[i];
        t.t0[s] = theta0[i];
        t.G[s] = G[i];
        t.aligned[s] = aligned16(w[i]) && aligned16(g[i]) && aligned16(m[i]) &&
                       aligned16(v[i]) && aligned16(theta0[i]) && aligned16(G[i]);
      },
      [&](const FusedTable& t, unsigned grid) {
        adamw_blend_kernel<<<grid, kThreads, 0, stream>>>(t, hyper, pre, ft, sel);
      });
}
