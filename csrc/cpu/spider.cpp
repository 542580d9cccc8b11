// SPIDER engine (SPEC §6), CPU implementation, plus the argument checks and device dispatch of the
// three entry points bound in bindings.cpp. Python: fastpeft/ops/importance.py.
//
// Per step, for n tensors (w: parameter, t0: θ₀ in w's dtype, G: fp32 gradient sum, g: gradient):
//   1. spider_accumulate:   G += g; moments_ft[i] = (Σ|G|, ΣG², numel)
//   2. spider_select_sums:  sel[i] = (Σ c_raw, count(c_raw > 0)) with
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

// Per-tensor scalars of R(T), derived from a (Σ|T|, ΣT², numel) row.
struct RStats {
  float mean;
  float scale;  // 1 / (std + 1e-12)
  bool zero;    // T is all zeros: R = 0
};

RStats r_stats(const double* m) {
  const double s1 = m[0], s2 = m[1], n = m[2];
  const double mean = n > 0 ? s1 / n : 0.0;
  double var = n > 1 ? (s2 - s1 * mean) / (n - 1) : 0.0;  // Σ(x−μ)² = Σx² − μΣ|x|
  if (!(var > 0.0)) var = 0.0;                             // rounding can make it slightly < 0
  return {static_cast<float>(mean), static_cast<float>(1.0 / (std::sqrt(var) + 1e-12)),
          !(s1 > 0.0)};
}

// --- per-element math, in blocks the compiler vectorises ------------------------------------
//
// NOTE: with std::exp (a scalar libm call) a whole step took ~65 ns per element, 17x a foreach
// AdamW step (6.3M bf16 elements, 2 AMD EPYC threads); exp_neg below is branch-free so GCC
// vectorises it, and the block kernels are compiled twice (AVX2 and baseline x86-64, chosen at
// load time). Neither clone uses FMA contraction, so both give the same bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FASTPEFT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FASTPEFT_CLONES
#endif
// Under GCC's default -ftrapping-math an ordered compare may raise an FP exception, so selects
// like `x < -87 ? 0 : y` stay branches and block vectorisation. Nothing here inspects FP
// exception flags, and the option changes no result bits. Functions of other option sets are
// not inlined in here, hence the __builtin_ spellings.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif

constexpr int64_t kBlock = 256;  // elements per vectorised block (stack buffers)

// exp(x) for x <= 0 (Cephes expf: ~1 ulp), 0 below -87 where float exp leaves the normal range.
inline float exp_neg(float x) {
  const float xc = x < -87.f ? -87.f : x;
  // Round-to-nearest by the 1.5 * 2^23 trick: branch-free and exact for |k| < 2^22.
  const float k = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;
  float r = xc - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;  // 2^k, k in [-126, 0]
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return x < -87.f ? 0.f : p * scale;
}

// R(|x|) for a = |x|: an overflow-free sigmoid (exp of −|z| only). `zero` is handled by callers.
inline float importance(float a, float mean, float scale) {
  const float z = (a - mean) * scale;
  const float e = exp_neg(-__builtin_fabsf(z));
  return (z >= 0.f ? 1.f : e) / (1.f + e);
}

// c[j] = I_ft / (I_pre + I_ft) where I_pre < I_ft, else 0, for n <= kBlock elements.
FASTPEFT_CLONES void c_raw_block(const float* t0, const float* g, int64_t n, const RStats& pre,
                                 const RStats& ft, float* c) {
  const float pm = pre.mean, ps = pre.scale, fm = ft.mean, fs = ft.scale;
  const float pz = pre.zero ? 0.f : 1.f, fz = ft.zero ? 0.f : 1.f;
  for (int64_t j = 0; j < n; ++j) {
    const float ip = pz * importance(__builtin_fabsf(t0[j]), pm, ps);
    const float ift = fz * importance(__builtin_fabsf(g[j]), fm, fs);
    const bool sel = ip < ift;
    // Divide unconditionally (by 1 where not selected): a division under a condition is
    // control flow the vectoriser will not convert (it could trap).
    const float q = ift / (sel ? ip + ift : 1.f);
    c[j] = sel ? q : 0.f;
  }
}

// x[j] ← a[j] + min(c[j] · inv_m, 1) · (x[j] − a[j]): the blend of θ₀ = a and w = x in float32.
FASTPEFT_CLONES void blend_block(const float* a, const float* c, float inv_m, int64_t n,
                                 float* x) {
  for (int64_t j = 0; j < n; ++j) {
    const float cj = c[j] * inv_m;
    x[j] = a[j] + (cj < 1.f ? cj : 1.f) * (x[j] - a[j]);
  }
}

// float -> bfloat16 with round-to-nearest-even, bit for bit c10::BFloat16's conversion, but
// branch-free (c10's NaN test is a branch that keeps its loop scalar).
inline void store_bf16(const float* src, int64_t n, c10::BFloat16* dst) {
  for (int64_t j = 0; j < n; ++j) {
    uint32_t bits;
    __builtin_memcpy(&bits, &src[j], sizeof(bits));
    const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    dst[j].x = src[j] != src[j] ? uint16_t{0x7FC0} : static_cast<uint16_t>(rounded);
  }
}

// Fixed-order float64 sums over 8 interleaved lanes (each lane is one dependency chain, so the
// order is the same whether or not the compiler vectorises across lanes).
struct Sum8 {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  template <typename V>
  void add(const V* v, int64_t n) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      for (int k = 0; k < 8; ++k) lane[k] += v[j + k];
    }
    for (int k = 0; j < n; ++j, ++k) lane[k] += v[j];
  }
  double total() const {
    const double lo = (lane[0] + lane[1]) + (lane[2] + lane[3]);
    return lo + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  }
};

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

// Outside the region above, so that c10's inline Half/BFloat16 conversions can be inlined.
template <typename T>
inline void to_float(const T* src, int64_t n, float* dst) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<float>(src[j]);
}

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

template <typename T>
void select_chunk(const T* t0, const float* G, int64_t len, const RStats& pre, const RStats& ft,
                  double* out) {
  Sum8 s;
  int64_t cnt = 0;
  float a[kBlock], c[kBlock];
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t n = std::min(kBlock, len - b);
    to_float(t0 + b, n, a);
    c_raw_block(a, G + b, n, pre, ft, c);
    s.add(c, n);
    for (int64_t j = 0; j < n; ++j) cnt += c[j] > 0.f;
  }
  out[0] = s.total();
  out[1] = static_cast<double>(cnt);
}

template <typename T>
inline void store(const float* src, int64_t n, T* dst) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<T>(src[j]);
}
template <>
inline void store<c10::BFloat16>(const float* src, int64_t n, c10::BFloat16* dst) {
  store_bf16(src, n, dst);
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

#define FASTPEFT_DISPATCH_FLOATS(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

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

std::vector<RStats> all_stats(const at::Tensor& moments) {
  const double* m = moments.const_data_ptr<double>();
  std::vector<RStats> out(moments.size(0));
  for (size_t i = 0; i < out.size(); ++i) out[i] = r_stats(m + 3 * i);
  return out;
}

at::Tensor select_sums_cpu(const std::vector<at::Tensor>& theta0, const std::vector<at::Tensor>& G,
                           const at::Tensor& pre, const at::Tensor& ft) {
  const ChunkMap map(G);
  const std::vector<RStats> sp = all_stats(pre), sf = all_stats(ft);
  std::vector<double> partial(2 * map.total());
  map.for_each([&](int64_t t, int64_t c, int64_t off, int64_t len) {
    const float* g = G[t].const_data_ptr<float>() + off;
    FASTPEFT_DISPATCH_FLOATS(theta0[t].scalar_type(), "spider_select_sums_cpu", [&] {
      select_chunk(theta0[t].const_data_ptr<scalar_t>() + off, g, len, sp[t], sf[t],
                   &partial[2 * c]);
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

// --- argument checks -----------------------------------------------------------------------------

void check_pairs(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b,
                 const char* fn, const char* an, const char* bn, bool same_dtype) {
  TORCH_CHECK_VALUE(a.size() == b.size(), fn, ": ", an, " and ", bn, " differ in length (",
                    a.size(), " vs ", b.size(), ")");
  for (size_t i = 0; i < a.size(); ++i) {
    TORCH_CHECK_VALUE(a[i].numel() == b[i].numel(), fn, ": ", an, "[", i, "] has ", a[i].numel(),
                      " elements but ", bn, "[", i, "] has ", b[i].numel());
    TORCH_CHECK_VALUE(!same_dtype || a[i].scalar_type() == b[i].scalar_type(), fn, ": ", an, "[",
                      i, "] is ", a[i].scalar_type(), " but ", bn, "[", i, "] is ",
                      b[i].scalar_type());
  }
}

void check_G(const std::vector<at::Tensor>& G, const char* fn) {
  for (size_t i = 0; i < G.size(); ++i) {
    TORCH_CHECK_VALUE(G[i].scalar_type() == at::kFloat, fn, ": G[", i,
                      "] must be float32, got ", G[i].scalar_type());
  }
}

void check_table(const at::Tensor& m, int64_t n, int64_t width, const c10::Device& device,
                 const char* fn, const char* name) {
  TORCH_CHECK_VALUE(m.defined() && m.scalar_type() == at::kDouble && m.dim() == 2 &&
                        m.size(0) == n && m.size(1) == width && m.is_contiguous(),
                    fn, ": ", name, " must be a contiguous float64 tensor of shape [", n, ", ",
                    width, "]");
  TORCH_CHECK_VALUE(m.device() == device, fn, ": ", name, " is on ", m.device(),
                    " but the tensors are on ", device);
}

using NamedList = std::pair<const std::vector<at::Tensor>*, const char*>;

// Checks that the lists have one length, then each list (named in messages: "<fn> (<name>):
// tensors[i] ..."), and that all share one device; returns it.
c10::Device check_lists(std::initializer_list<NamedList> lists, const char* fn) {
  const NamedList& first = *lists.begin();
  for (const auto& [list, name] : lists) {
    TORCH_CHECK_VALUE(list->size() == first.first->size(), fn, ": ", name, " has ", list->size(),
                      " tensors but ", first.second, " has ", first.first->size());
  }
  std::optional<c10::Device> device;
  for (const auto& [list, name] : lists) {
    const std::string where = std::string(fn) + " (" + name + ")";
    const c10::Device d = check_tensor_list(*list, where.c_str());
    if (!device) device = d;
    TORCH_CHECK_VALUE(d == *device, fn, ": ", name, " is on ", d, " but ", first.second,
                      " is on ", *device);
  }
  return *device;
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
                              const at::Tensor& ft) {
  constexpr const char* fn = "spider_select_sums";
  if (G.empty() && theta0.empty()) return at::zeros({0, 2}, at::dtype(at::kDouble));
  const c10::Device device = check_lists({{&theta0, "theta0"}, {&G, "G"}}, fn);
  check_pairs(theta0, G, fn, "theta0", "G", false);
  check_G(G, fn);
  const int64_t n = static_cast<int64_t>(G.size());
  check_table(pre, n, 3, device, fn, "moments_pre");
  check_table(ft, n, 3, device, fn, "moments_ft");
  const bool cuda = on_cuda(device, fn);
  GilReleasedForWork no_gil;
  return cuda ? spider_select_sums_cuda(theta0, G, pre, ft) : select_sums_cpu(theta0, G, pre, ft);
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
