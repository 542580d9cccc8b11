// AdamW's per-element update as the fused optimizers' CPU passes run it (spider_adamw.cpp:
// SpiderAdamW; masked_adamw.cpp: MagnitudeMaskAdamW), in torch.optim.AdamW's order:
//
//   m ← m + (1 − β₁)(g − m);   v ← β₂ v + (1 − β₂) g²
//   x ← w (1 − lr·λ) − (lr / bc₁) · m / (√v / √bc₂ + ε)                 bc = 1 − βᵗ
//
// Per-tensor hyper-parameters come as a [n, 6] float64 table with columns (1 − lr·λ, lr / bc₁, β₁,
// β₂, ε, √bc₂), rounded once to float32 (float64 for float64 parameters) like the SPIDER scalars.
#pragma once

#include <cstdint>

#include "spider_math.h"

namespace fastpeft {
namespace {

constexpr int64_t kHyperColumns = 6;

// One tensor's AdamW scalars in the arithmetic type F (float, or double for float64 parameters).
template <typename F>
struct AdamW {
  F decay, step_size, one_minus_beta1, beta2, one_minus_beta2, eps, bc2_sqrt;
  explicit AdamW(const double* h)
      : decay(static_cast<F>(h[0])), step_size(static_cast<F>(h[1])),
        one_minus_beta1(static_cast<F>(1.0 - h[2])), beta2(static_cast<F>(h[3])),
        one_minus_beta2(static_cast<F>(1.0 - h[3])), eps(static_cast<F>(h[4])),
        bc2_sqrt(static_cast<F>(h[5])) {}
};

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
// As in spider_math.h. The square root also needs -fno-math-errno (setup.py): without it GCC
// keeps a libm fallback call for negative arguments in the loop, which blocks vectorisation, and
// GCC 12 ignores that option in a pragma or attribute.
#pragma GCC optimize("no-trapping-math", "fp-contract=off")
#endif

// The square root in the argument's own precision (__builtin_sqrt of a float would widen the
// whole update to double and halve the vector width).
inline float root(float x) { return __builtin_sqrtf(x); }
inline double root(double x) { return __builtin_sqrt(x); }

// The AdamW update of n elements in place: m, v and x (the parameter) in F.
template <typename F>
inline void adamw_update(const F* g, F* m, F* v, F* x, int64_t n, const AdamW<F>& h) {
  for (int64_t j = 0; j < n; ++j) {
    const F gj = g[j];
    const F mj = m[j] + h.one_minus_beta1 * (gj - m[j]);
    const F vj = v[j] * h.beta2 + h.one_minus_beta2 * (gj * gj);
    const F denom = root(vj) / h.bc2_sqrt + h.eps;
    m[j] = mj;
    v[j] = vj;
    x[j] = x[j] * h.decay - h.step_size * (mj / denom);
  }
}

// GCC's target_clones takes plain functions, not templates: one per arithmetic type.
FASTPEFT_CLONES void adamw_block(const float* g, float* m, float* v, float* x, int64_t n,
                                 const AdamW<float>& h) {
  adamw_update(g, m, v, x, n, h);
}
FASTPEFT_CLONES void adamw_block(const double* g, double* m, double* v, double* x, int64_t n,
                                 const AdamW<double>& h) {
  adamw_update(g, m, v, x, n, h);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

// AdamW over n ≤ kBlock elements of a 16/32-bit float type T: m and v updated in place (through
// float), w's updated value left in x (float, unrounded) for the caller to finish and store.
template <typename T>
inline void adamw_to_float(const T* g, T* m, T* v, const T* w, int64_t n, const AdamW<float>& h,
                           float* x) {
  float gf[kBlock], mf[kBlock], vf[kBlock];
  to_float(g, n, gf);
  to_float(m, n, mf);
  to_float(v, n, vf);
  to_float(w, n, x);
  adamw_block(gf, mf, vf, x, n, h);
  store(mf, n, m);
  store(vf, n, v);
}

}  // namespace
}  // namespace fastpeft
