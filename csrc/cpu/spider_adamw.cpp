// SpiderAdamW's fused pass (fastpeft/spider/_adamw.py), CPU implementation, with the argument
// checks and device dispatch of its entry point (bound in bindings.cpp).
//
// After SPIDER's passes 1 and 2 (spider.cpp: G += g with the moments of G, then the select sums),
// one pass per element does what AdamW's step and SPIDER's blend would do in two:
//
//   m, v, x ← AdamW's update of the moments and of w                    (adamw_math.h)
//   w ← θ₀ + min(c_raw / m_c, 1) ⊙ (x − θ₀)    where the tensor has a selected element, else x
//
// so w, g, m and v are read once and written once, and x is never rounded to w's dtype before the
// blend (AdamW then Spider.step() rounds it twice). On the CPU, where the two sigmoids per element
// bound the passes rather than memory, pass 2 may keep c_raw in an fp32 scratch list (c_out of
// spider_select_sums) that this pass then reads (`c_raw`) instead of computing it again: 4 more
// bytes written and read per element, two exponentials and a division fewer. The pass order matters: SPIDER's c depends on
// G and θ₀ only, never on w, so both reductions can run before the AdamW update and the update
// can feed the blend in registers.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "adamw_math.h"
#include "chunk_map.h"
#include "spider_checks.h"
#include "spider_math.h"

namespace fastpeft {

// Defined in cuda/spider_glue.cpp (CUDA builds) or below (CPU-only builds, where it raises).
void spider_adamw_blend_cuda(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& grads,
                             const std::vector<at::Tensor>& exp_avg,
                             const std::vector<at::Tensor>& exp_avg_sq,
                             const std::vector<at::Tensor>& theta0,
                             const std::vector<at::Tensor>& G, const at::Tensor& hyper,
                             const at::Tensor& pre, const at::Tensor& ft, const at::Tensor& sel);

namespace {

// The fused pass over one chunk of one tensor; `inv_m` < 0 marks a tensor with nothing selected
// (AdamW only, as Spider leaves such a tensor alone). `kept`: c_raw as pass 2 stored it, or null
// to compute it from θ₀ and G.
template <typename T>
void adamw_blend_chunk(T* w, const T* g, T* m, T* v, const T* t0, const float* G,
                       const float* kept, int64_t len, const RStats& pre, const RStats& ft,
                       float inv_m, const AdamW<float>& h) {
  float x[kBlock], a[kBlock], buffer[kBlock];
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t n = std::min(kBlock, len - b);
    adamw_to_float(g + b, m + b, v + b, w + b, n, h, x);
    if (inv_m >= 0.f) {
      to_float(t0 + b, n, a);
      const float* c = kept != nullptr ? kept + b : buffer;
      if (kept == nullptr) c_raw_block(a, G + b, n, pre, ft, buffer);
      blend_block(a, c, inv_m, n, x);
    }
    store(x, n, w + b);
  }
}

// float64 parameters keep their precision: AdamW and the blend in double (c itself is float32).
void adamw_blend_chunk_f64(double* w, const double* g, double* m, double* v, const double* t0,
                           const float* G, const float* kept, int64_t len, const RStats& pre,
                           const RStats& ft, float inv_m, const AdamW<double>& h) {
  float af[kBlock], buffer[kBlock];
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t n = std::min(kBlock, len - b);
    adamw_block(g + b, m + b, v + b, w + b, n, h);
    if (inv_m < 0.f) continue;
    to_float(t0 + b, n, af);
    const float* c = kept != nullptr ? kept + b : buffer;
    if (kept == nullptr) c_raw_block(af, G + b, n, pre, ft, buffer);
    for (int64_t j = 0; j < n; ++j) {
      const double cj = std::min(c[j] * inv_m, 1.f);
      w[b + j] = t0[b + j] + cj * (w[b + j] - t0[b + j]);
    }
  }
}

void adamw_blend_cpu(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& grads,
                     const std::vector<at::Tensor>& exp_avg,
                     const std::vector<at::Tensor>& exp_avg_sq,
                     const std::vector<at::Tensor>& theta0, const std::vector<at::Tensor>& G,
                     const at::Tensor& hyper, const at::Tensor& pre, const at::Tensor& ft,
                     const at::Tensor& sel, const std::vector<at::Tensor>& c_raw) {
  const ChunkMap map(G);
  const std::vector<RStats> sp = all_stats(pre), sf = all_stats(ft);
  const double* s = sel.const_data_ptr<double>();
  const double* hy = hyper.const_data_ptr<double>();
  map.for_each([&](int64_t t, int64_t, int64_t off, int64_t len) {
    const double count = s[2 * t + 1];
    const float inv_m = count > 0.0 ? static_cast<float>(count / s[2 * t]) : -1.f;
    const double* h = hy + kHyperColumns * t;
    const float* Gt = G[t].const_data_ptr<float>() + off;
    const float* kept = c_raw.empty() ? nullptr : c_raw[t].const_data_ptr<float>() + off;
    if (w[t].scalar_type() == at::kDouble) {
      adamw_blend_chunk_f64(w[t].data_ptr<double>() + off, grads[t].const_data_ptr<double>() + off,
                            exp_avg[t].data_ptr<double>() + off,
                            exp_avg_sq[t].data_ptr<double>() + off,
                            theta0[t].const_data_ptr<double>() + off, Gt, kept, len, sp[t],
                            sf[t], inv_m, AdamW<double>(h));
      return;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w[t].scalar_type(),
                                    "spider_adamw_blend_cpu", [&] {
      if constexpr (!std::is_same_v<scalar_t, double>) {
        adamw_blend_chunk(w[t].data_ptr<scalar_t>() + off,
                          grads[t].const_data_ptr<scalar_t>() + off,
                          exp_avg[t].data_ptr<scalar_t>() + off,
                          exp_avg_sq[t].data_ptr<scalar_t>() + off,
                          theta0[t].const_data_ptr<scalar_t>() + off, Gt, kept, len, sp[t],
                          sf[t], inv_m, AdamW<float>(h));
      }
    });
  });
}

}  // namespace

#ifndef FASTPEFT_WITH_CUDA
void spider_adamw_blend_cuda(const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                             const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                             const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&) {
  TORCH_CHECK(false, "spider_adamw_blend_: tensors are on a CUDA device but ", kBuiltWithoutCuda);
}
#endif

void spider_adamw_blend_(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& grads,
                         const std::vector<at::Tensor>& exp_avg,
                         const std::vector<at::Tensor>& exp_avg_sq,
                         const std::vector<at::Tensor>& theta0, const std::vector<at::Tensor>& G,
                         const at::Tensor& hyper, const at::Tensor& pre, const at::Tensor& ft,
                         const at::Tensor& sel, const std::vector<at::Tensor>& c_raw) {
  constexpr const char* fn = "spider_adamw_blend_";
  if (w.empty() && grads.empty() && exp_avg.empty() && exp_avg_sq.empty() && theta0.empty() &&
      G.empty()) {
    return;
  }
  const c10::Device device = check_adamw_lists(w, grads, exp_avg, exp_avg_sq, theta0, fn);
  check_lists({{&w, "w"}, {&G, "G"}}, fn);
  check_pairs(w, G, fn, "w", "G", false);
  check_G(G, fn);
  const int64_t n = static_cast<int64_t>(G.size());
  check_table(hyper, n, kHyperColumns, device, fn, "hyper");
  check_table(pre, n, 3, device, fn, "moments_pre");
  check_table(ft, n, 3, device, fn, "moments_ft");
  check_table(sel, n, 2, device, fn, "select_sums");
  const bool cuda = on_cuda(device, fn);
  check_c_raw(c_raw, G, cuda, fn, "c_raw");
  GilReleasedForWork no_gil;
  if (cuda) return spider_adamw_blend_cuda(w, grads, exp_avg, exp_avg_sq, theta0, G, hyper, pre,
                                           ft, sel);
  adamw_blend_cpu(w, grads, exp_avg, exp_avg_sq, theta0, G, hyper, pre, ft, sel, c_raw);
}

}  // namespace fastpeft
