// SPIDER's per-element math on the CPU, shared by spider.cpp (the three passes) and
// spider_adamw.cpp (SpiderAdamW's fused AdamW + blend pass), so both compute c bit for bit alike.
//
// Everything sits in an anonymous namespace: the vectorised blocks are GCC target_clones (an
// ifunc per function), which must stay private to each translation unit.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace fastpeft {
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
// vectorises it, and the block kernels are compiled three times (AVX-512F, Haswell's AVX2 + FMA
// and baseline x86-64, chosen at load time). No clone contracts a product and a sum into an FMA
// by itself (fp-contract=off below), and the explicit ones round alike everywhere (exp_neg), so
// all give the same bits. NOTE: the AVX-512F clone took the select pass from
// 14.2 to 9.9 ms and SpiderAdamW's step from 42 to 36 ms (6.3M bf16 elements, 1 thread, this
// AMD EPYC (Zen 4) VM): fewer instructions for the same 256-bit-wide execution.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FASTPEFT_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define FASTPEFT_CLONES
#endif
// Under GCC's default -ftrapping-math an ordered compare may raise an FP exception, so selects
// like `x < -87 ? 0 : y` stay branches and block vectorisation. Nothing here inspects FP
// exception flags, and the option changes no result bits (nor does fp-contract=off, which only
// keeps the AVX-512F clone's bits equal to the others'). Functions of other option sets are
// not inlined in here, hence the __builtin_ spellings.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math", "fp-contract=off")
#endif

constexpr int64_t kBlock = 256;  // elements per vectorised block (stack buffers)

// exp(x) for x <= 0 (Cephes expf's reduction and polynomial, ~1 ulp), 0 below -87 where float exp
// leaves the normal range. The polynomial and the reduction are explicit fused multiply-adds:
// NOTE: about half the instructions of separate products and sums: the select pass went from 9.9
// to 7.6 ms (6.3M bf16 elements, 1 thread, this AMD EPYC (Zen 4) VM). __builtin_fmaf rounds once
// wherever it runs (an FMA instruction in the AVX-512F and Haswell clones, libm's fmaf in the
// baseline one), so every clone still gives the same bits.
inline float exp_neg(float x) {
  const float xc = x < -87.f ? -87.f : x;
  // Round-to-nearest by the 1.5 * 2^23 trick: branch-free and exact for |k| < 2^22.
  const float k = __builtin_fmaf(xc, 1.44269504088896341f, 12582912.f) - 12582912.f;
  float r = __builtin_fmaf(k, -0.693359375f, xc);
  r = __builtin_fmaf(k, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = __builtin_fmaf(p, r, 1.3981999507e-3f);
  p = __builtin_fmaf(p, r, 8.3334519073e-3f);
  p = __builtin_fmaf(p, r, 4.1665795894e-2f);
  p = __builtin_fmaf(p, r, 1.6666665459e-1f);
  p = __builtin_fmaf(p, r, 5.0000001201e-1f);
  p = __builtin_fmaf(p, r * r, r) + 1.f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;  // 2^k, k in [-126, 0]
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return x < -87.f ? 0.f : p * scale;
}

// R(|x|) = num / den for a = |x|, as an overflow-free sigmoid (exp of −|z| only): den = 1 + e
// and num = 1 (z >= 0) or e (z < 0), e = exp(−|z|). `zero` is handled by callers.
struct Ratio {
  float num, den;
};
inline Ratio importance(float a, float mean, float scale) {
  const float z = (a - mean) * scale;
  const float e = exp_neg(-__builtin_fabsf(z));
  return {z >= 0.f ? 1.f : e, 1.f + e};
}

// c[j] = I_ft / (I_pre + I_ft) where I_pre < I_ft, else 0, for n <= kBlock elements.
//
// NOTE: as one quotient, I_ft / (I_pre + I_ft) = n_f d_p / (n_p d_f + n_f d_p), and the test
// I_pre < I_ft as n_p d_f < n_f d_p (the denominators are >= 1): one division per element
// instead of three. The divisions bounded this pass (6.3M bf16 elements, 1 thread of this AMD
// EPYC VM: the select pass went from 14.7 ms to 9.9 ms). Each side of the test is one rounded
// product instead of one rounded quotient, so where I_pre and I_ft are within an ulp or two the
// choice may differ from the float64 reference (as the quotient form's may); c_raw itself is
// within 3 ulps of the float64 value of the same formula (a product of two, a sum, a quotient).
FASTPEFT_CLONES void c_raw_block(const float* t0, const float* g, int64_t n, const RStats& pre,
                                 const RStats& ft, float* c) {
  const float pm = pre.mean, ps = pre.scale, fm = ft.mean, fs = ft.scale;
  const float pz = pre.zero ? 0.f : 1.f, fz = ft.zero ? 0.f : 1.f;
  for (int64_t j = 0; j < n; ++j) {
    const Ratio ip = importance(__builtin_fabsf(t0[j]), pm, ps);
    const Ratio ift = importance(__builtin_fabsf(g[j]), fm, fs);
    const float lhs = pz * ip.num * ift.den;   // I_pre · d_p d_f
    const float rhs = fz * ift.num * ip.den;   // I_ft · d_p d_f
    const bool sel = lhs < rhs;
    // Divide unconditionally (by 1 where not selected): a division under a condition is
    // control flow the vectoriser will not convert (it could trap).
    const float q = rhs / (sel ? lhs + rhs : 1.f);
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
inline void store(const float* src, int64_t n, T* dst) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<T>(src[j]);
}
template <>
inline void store<c10::BFloat16>(const float* src, int64_t n, c10::BFloat16* dst) {
  store_bf16(src, n, dst);
}

#define FASTPEFT_DISPATCH_FLOATS(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

std::vector<RStats> all_stats(const at::Tensor& moments) {
  const double* m = moments.const_data_ptr<double>();
  std::vector<RStats> out(moments.size(0));
  for (size_t i = 0; i < out.size(); ++i) out[i] = r_stats(m + 3 * i);
  return out;
}

}  // namespace
}  // namespace fastpeft
