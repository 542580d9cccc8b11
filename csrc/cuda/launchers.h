// C interface of the pure-CUDA launchers (dtype codes and prototypes), shared by their definitions
// in abs_moments.cu / spider.cu and their callers in the torch glue.
//
// Torch-free on purpose: the .cu files include it and must still compile with plain `nvcc -c`.
// Including it on both sides makes the compiler check each extern "C" definition against the
// declaration the glue calls (extern "C" names carry no types, so a drifted copy would link fine
// and then misread its arguments), and keeps the dtype codes in one place.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fastpeft {

// dtype of each tensor, as the launchers take it (one int per tensor); glue_common.h maps
// at::ScalarType onto these.
enum DtypeCode : int { kF32 = 0, kF16 = 1, kBF16 = 2, kF64 = 3 };

}  // namespace fastpeft

// --- abs_moments.cu --------------------------------------------------------------------------

// Bytes of device workspace fastpeft_abs_moments_cuda needs for these numels (may be 0).
extern "C" int64_t fastpeft_abs_moments_cuda_workspace_bytes(const int64_t* numels, int n);

// ptrs/numels/dtype_codes: host arrays of length n describing contiguous device tensors.
// out: device [n, 3] doubles. workspace: device buffer of the size given above.
// Everything is enqueued on `stream`; returns the first launch error, or cudaErrorInvalidValue
// (before launching anything) for a bad dtype code or a negative numel.
extern "C" cudaError_t fastpeft_abs_moments_cuda(const void* const* ptrs, const int64_t* numels,
                                                 const int* dtype_codes, int n, double* out,
                                                 double* workspace, cudaStream_t stream);

// --- spider.cu -------------------------------------------------------------------------------

// Bytes of device workspace the two reducing passes need for these numels (may be 0).
extern "C" int64_t fastpeft_spider_workspace_bytes(const int64_t* numels, int n);

// Pass 1. G[i] (fp32) += g[i] (dtype_codes[i]); out: device [n, 3] (Σ|G|, ΣG², numel).
extern "C" cudaError_t fastpeft_spider_accumulate_cuda(float* const* G, const void* const* g,
                                                       const int* dtype_codes,
                                                       const int64_t* numels, int n, double* out,
                                                       double* workspace, cudaStream_t stream);

// Pass 2. out: device [n, 2] (Σ c_raw, count) from θ₀ (dtype_codes[i]), G and the device
// moments tables pre/ft [n, 3].
extern "C" cudaError_t fastpeft_spider_select_cuda(const void* const* theta0,
                                                   const float* const* G, const int* dtype_codes,
                                                   const int64_t* numels, int n,
                                                   const double* pre, const double* ft,
                                                   double* out, double* workspace,
                                                   cudaStream_t stream);

// Pass 3. w[i] ← θ₀ + min(c_raw / m, 1) (w − θ₀) in place (w and θ₀ of dtype_codes[i]); sel is
// the device [n, 2] output of pass 2 (after any all-reduce).
extern "C" cudaError_t fastpeft_spider_blend_cuda(void* const* w, const void* const* theta0,
                                                  const float* const* G, const int* dtype_codes,
                                                  const int64_t* numels, int n, const double* pre,
                                                  const double* ft, const double* sel,
                                                  cudaStream_t stream);

// --- spider_adamw.cu -------------------------------------------------------------------------

// SpiderAdamW's fused pass (after passes 1 and 2), in place: per element of tensor i, AdamW's
// update of m[i], v[i] and w[i] (all of dtype_codes[i]) with the device row hyper[6 i .. 6 i + 5]
// = (1 − lr·wd, lr / bc1, β1, β2, ε, √bc2), then the pass-3 blend of the updated value when
// sel[i] counts a selected element. g[i] and θ₀ share the dtype; G is fp32.
extern "C" cudaError_t fastpeft_spider_adamw_blend_cuda(
    void* const* w, const void* const* g, void* const* m, void* const* v,
    const void* const* theta0, const float* const* G, const int* dtype_codes,
    const int64_t* numels, int n, const double* hyper, const double* pre, const double* ft,
    const double* sel, cudaStream_t stream);
