// SPIDER engine (SPEC §6), CPU implementation, plus the argument checks and device dispatch of the
// three entry points bound in bindings.cpp. Python: fastpeft/ops/importance.py.
//
// Per step, for n tensors (w: parameter, t0: θ₀ in w's dtype, G: fp32 gradient sum, g: gradient):
//   1. spider_accumulate:   G += g; moments_ft[i] = (Σ|G|, ΣG², numel)
//   2. spider_select_sums:  sel[i] = (Σ c_raw, count(c_raw > 0)) (and, CPU only, c_raw itself
//                           into c_out when given, for SpiderAdamW's fused pass) with
//                           c_raw = I_ft / (I_pre + I_ft) where I_pre < I_ft, else 0,
//                           I_pre = R(t0) from moments_pre[i], I_ft = R(G) from moments_ft[i]
//   3. spider_blend_:       w ← t0 + min(c_raw / m, 1) ⊙ (w − t0), m = Σ c_raw / count; tensors
//                           with count == 0 are left untouched
// R(T) = sigmoid((|T| − mean) / (std + 1e-12)), mean/std (unbiased) from the moments row; R = 0
// when Σ|T| = 0. Moments are inputs (not recomputed) so that a distributed caller can all-reduce
// them over the shards between passes.
//
// Numerics shared with the Triton and CUDA paths: sums in float64, per-tensor scalars derived in
// float64 then rounded once to float32, per-element math in float32.
//
// The per-element math lives in spider_math.h and the argument checks in spider_checks.h, shared
// with spider_adamw.cpp (SpiderAdamW's fused pass).
//
// Determinism: every tensor is cut into fixed kChunk-element chunks (chunk_map.h, shared with
// abs_moments.cpp); a chunk is reduced by one thread in a fixed order into its own partial slot and
// the partials of a tensor are combined in chunk order, so results do not depend on the thread
// count (nor on which of the AVX2/baseline clones of the vectorised block kernel runs).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../checks.h"
#include "chunk_map.h"
#include "spider_checks.h"
#include "spider_math.h"

namespace fastpeft {

// Defined in cuda/spider_glue.cpp (CUDA builds) or below (CPU-only builds, where they raise).
at::Tensor spider_accumulate_cuda(const std::vector<at::Tensor>& G,
                                  const std::vector<at::Tensor>& grads);
at::Tensor spider_select_sums_cuda(const std::vector<at::Tensor>& theta0,
                                   const std::vector<at::Tensor>& G, const at::Tensor& pre,
                                   const at::Tensor& ft);
void spider_blend_cuda(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& theta0,
                       const std::vector<at::Tensor>& G, const at::Tensor& pre,
                       const at::Tensor& ft, const at::Tensor& sel);

namespace {
template <typename T>
void accumulate_chunk(float* G, const T* g, int64_t len, double* out) {
  Sum8 s, q;
  float v[kBlock], a[kBlock];
  double v2[kBlock];
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t n = std::min(kBlock, len - b);
    to_float(g + b, n, v);
    for (int64_t j = 0; j < n; ++j) {
      const float x = G[b + j] + v[j];
      G[b + j] = x;
      a[j] = std::abs(x);
      v2[j] = static_cast<double>(x) * x;  // exact: a float's square fits a double
    }
    s.add(a, n);
    q.add(v2, n);
  }
  out[0] = s.total();
  out[1] = q.total();
}

// `keep` (or null): where c_raw is also stored, for a fused pass 3 to read instead of computing.
template <typename T>
void select_chunk(const T* t0, const float* G, int64_t len, const RStats& pre, const RStats& ft,
                  double* out, float* keep) {
  Sum8 s;
  int64_t cnt = 0;
  float a[kBlock], buffer[kBlock];
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t n = std::min(kBlock, len - b);
    float* c = keep != nullptr ? keep + b : buffer;
    to_float(t0 + b, n, a);
    c_raw_block(a, G + b, n, pre, ft, c);
    s.add(c, n);
    for (int64_t j = 0; j < n; ++j) cnt += c[j] > 0.f;
  }
  out[0] = s.total();
  out[1] = static_cast<double>(cnt);
}

// w ← θ₀ + c (w − θ₀) in float32; in float64 for float64 parameters, whose precision must survive.
template <typename T>
void blend_chunk(T* w, const T* t0, const float* G, int64_t len, const RStats& pre,
                 const RStats& ft, float inv_m) {
  float a[kBlock], c[kBlock], x[kBlock];
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t n = std::min(kBlock, len - b);
    to_float(t0 + b, n, a);
    c_raw_block(a, G + b, n, pre, ft, c);
    if constexpr (std::is_same_v<T, double>) {
      for (int64_t j = 0; j < n; ++j) {
        const double cj = std::min(c[j] * inv_m, 1.f);
        w[b + j] = t0[b + j] + cj * (w[b + j] - t0[b + j]);
      }
    } else {
      to_float(w + b, n, x);
      blend_block(a, c, inv_m, n, x);
      store(x, n, w + b);
    }
  }
}

at::Tensor accumulate_cpu(const std::vector<at::Tensor>& G, const std::vector<at::Tensor>& grads) {
  const ChunkMap map(G);
  std::vector<double> partial(2 * map.total());
  map.for_each([&](int64_t t, int64_t c, int64_t off, int64_t len) {
    float* dst = G[t].data_ptr<float>() + off;
    FASTPEFT_DISPATCH_FLOATS(grads[t].scalar_type(), "spider_accumulate_cpu", [&] {
      accumulate_chunk(dst, grads[t].const_data_ptr<scalar_t>() + off, len, &partial[2 * c]);
    });
  });
  return map.moments(partial);
}

at::Tensor select_sums_cpu(const std::vector<at::Tensor>& theta0, const std::vector<at::Tensor>& G,
                           const at::Tensor& pre, const at::Tensor& ft,
                           const std::vector<at::Tensor>& c_out) {
  const ChunkMap map(G);
  const std::vector<RStats> sp = all_stats(pre), sf = all_stats(ft);
  std::vector<double> partial(2 * map.total());
  map.for_each([&](int64_t t, int64_t c, int64_t off, int64_t len) {
    const float* g = G[t].const_data_ptr<float>() + off;
    float* keep = c_out.empty() ? nullptr : c_out[t].data_ptr<float>() + off;
    FASTPEFT_DISPATCH_FLOATS(theta0[t].scalar_type(), "spider_select_sums_cpu", [&] {
      select_chunk(theta0[t].const_data_ptr<scalar_t>() + off, g, len, sp[t], sf[t],
                   &partial[2 * c], keep);
    });
  });
  at::Tensor out = at::empty({static_cast<int64_t>(G.size()), 2}, at::dtype(at::kDouble));
  map.combine(partial, out.data_ptr<double>(), 2);
  return out;
}

void blend_cpu(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& theta0,
               const std::vector<at::Tensor>& G, const at::Tensor& pre, const at::Tensor& ft,
               const at::Tensor& sel) {
  const ChunkMap map(G);
  const std::vector<RStats> sp = all_stats(pre), sf = all_stats(ft);
  const double* s = sel.const_data_ptr<double>();
  map.for_each([&](int64_t t, int64_t, int64_t off, int64_t len) {
    const double count = s[2 * t + 1];
    if (!(count > 0.0)) return;  // no element selected: the tensor is left as it is
    const float inv_m = static_cast<float>(count / s[2 * t]);
    const float* g = G[t].const_data_ptr<float>() + off;
    FASTPEFT_DISPATCH_FLOATS(w[t].scalar_type(), "spider_blend_cpu", [&] {
      blend_chunk(w[t].data_ptr<scalar_t>() + off, theta0[t].const_data_ptr<scalar_t>() + off, g,
                  len, sp[t], sf[t], inv_m);
    });
  });
}

}  // namespace

#ifndef FASTPEFT_WITH_CUDA
// CPU-only build: the CUDA entry points exist and explain how to get them.
namespace {
[[noreturn]] void no_cuda(const char* fn) {
  TORCH_CHECK(false, fn, ": tensors are on a CUDA device but ", kBuiltWithoutCuda);
}
}  // namespace

at::Tensor spider_accumulate_cuda(const std::vector<at::Tensor>&,
                                  const std::vector<at::Tensor>&) {
  no_cuda("spider_accumulate");
}
at::Tensor spider_select_sums_cuda(const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                                   const at::Tensor&, const at::Tensor&) {
  no_cuda("spider_select_sums");
}
void spider_blend_cuda(const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                       const std::vector<at::Tensor>&, const at::Tensor&, const at::Tensor&,
                       const at::Tensor&) {
  no_cuda("spider_blend_");
}
#endif

at::Tensor spider_accumulate(const std::vector<at::Tensor>& G,
                             const std::vector<at::Tensor>& grads) {
  constexpr const char* fn = "spider_accumulate";
  if (G.empty() && grads.empty()) return at::zeros({0, 3}, at::dtype(at::kDouble));
  const c10::Device device = check_lists({{&G, "G"}, {&grads, "grads"}}, fn);
  check_pairs(G, grads, fn, "G", "grads", false);
  check_G(G, fn);
  const bool cuda = on_cuda(device, fn);
  GilReleasedForWork no_gil;
  return cuda ? spider_accumulate_cuda(G, grads) : accumulate_cpu(G, grads);
}

at::Tensor spider_select_sums(const std::vector<at::Tensor>& theta0,
                              const std::vector<at::Tensor>& G, const at::Tensor& pre,
                              const at::Tensor& ft, const std::vector<at::Tensor>& c_out) {
  constexpr const char* fn = "spider_select_sums";
  if (G.empty() && theta0.empty()) return at::zeros({0, 2}, at::dtype(at::kDouble));
  const c10::Device device = check_lists({{&theta0, "theta0"}, {&G, "G"}}, fn);
  check_pairs(theta0, G, fn, "theta0", "G", false);
  check_G(G, fn);
  const int64_t n = static_cast<int64_t>(G.size());
  check_table(pre, n, 3, device, fn, "moments_pre");
  check_table(ft, n, 3, device, fn, "moments_ft");
  const bool cuda = on_cuda(device, fn);
  check_c_raw(c_out, G, cuda, fn, "c_out");
  GilReleasedForWork no_gil;
  return cuda ? spider_select_sums_cuda(theta0, G, pre, ft)
              : select_sums_cpu(theta0, G, pre, ft, c_out);
}

void spider_blend_(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& theta0,
                   const std::vector<at::Tensor>& G, const at::Tensor& pre, const at::Tensor& ft,
                   const at::Tensor& sel) {
  constexpr const char* fn = "spider_blend_";
  if (w.empty() && theta0.empty() && G.empty()) return;
  const c10::Device device = check_lists({{&w, "w"}, {&theta0, "theta0"}, {&G, "G"}}, fn);
  check_pairs(w, theta0, fn, "w", "theta0", true);
  check_pairs(w, G, fn, "w", "G", false);
  check_G(G, fn);
  const int64_t n = static_cast<int64_t>(G.size());
  check_table(pre, n, 3, device, fn, "moments_pre");
  check_table(ft, n, 3, device, fn, "moments_ft");
  check_table(sel, n, 2, device, fn, "select_sums");
  const bool cuda = on_cuda(device, fn);
  GilReleasedForWork no_gil;
  if (cuda) return spider_blend_cuda(w, theta0, G, pre, ft, sel);
  blend_cpu(w, theta0, G, pre, ft, sel);
}

}  // namespace fastpeft
