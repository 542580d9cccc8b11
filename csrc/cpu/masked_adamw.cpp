// MagnitudeMaskAdamW's pass (fastpeft/spider/_mask_adamw.py), CPU implementation, with the
// argument checks of its entry point (bound in bindings.cpp). One pass per element does what
// AdamW's step and MagnitudeMask's would do in two:
//
//   m, v, x ← AdamW's update of the moments and of w                    (adamw_math.h)
//   w ← θ₀ where the mask pins the element, else x (rounded once to w's dtype)
//
// so w, m and v are read and written once, g, θ₀ and the 1-byte mask read once. On a GPU the
// optimizer runs the Triton kernel (kernels/spider_adamw.py); CUDA tensors are refused here.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "adamw_math.h"
#include "chunk_map.h"
#include "spider_checks.h"
#include "spider_math.h"

namespace fastpeft {
namespace {

// x[j] = pin[j] ? a[j] : x[j], branch-free: the mask is random (half the elements at ratio 0.5),
// so a branch mispredicts on every other element (measured: the pass ran at a third of AdamW's
// speed with the plain ternary). Selecting the bits lets the loop vectorise. `pin` holds torch
// bools (0 or 1).
template <typename F, typename U>
inline void pin_select(const bool* pin, const F* a, F* x, int64_t n) {
  static_assert(sizeof(F) == sizeof(U), "bit width");
  for (int64_t j = 0; j < n; ++j) {
    U xi, ai;
    std::memcpy(&xi, x + j, sizeof(U));
    std::memcpy(&ai, a + j, sizeof(U));
    const U m = U(0) - static_cast<U>(pin[j]);
    xi = (ai & m) | (xi & ~m);
    std::memcpy(x + j, &xi, sizeof(U));
  }
}

FASTPEFT_CLONES void pin_block(const bool* pin, const float* a, float* x, int64_t n) {
  pin_select<float, std::uint32_t>(pin, a, x, n);
}
FASTPEFT_CLONES void pin_block(const bool* pin, const double* a, double* x, int64_t n) {
  pin_select<double, std::uint64_t>(pin, a, x, n);
}

// The pass over one chunk of one tensor of a 16/32-bit float type T (AdamW in float).
template <typename T>
void masked_adamw_chunk(T* w, const T* g, T* m, T* v, const T* t0, const bool* pin, int64_t len,
                        const AdamW<float>& h) {
  float x[kBlock], a[kBlock];
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t n = std::min(kBlock, len - b);
    adamw_to_float(g + b, m + b, v + b, w + b, n, h, x);
    to_float(t0 + b, n, a);
    pin_block(pin + b, a, x, n);
    store(x, n, w + b);
  }
}

// float64 parameters keep their precision: AdamW in double, in place.
void masked_adamw_chunk_f64(double* w, const double* g, double* m, double* v, const double* t0,
                            const bool* pin, int64_t len, const AdamW<double>& h) {
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t n = std::min(kBlock, len - b);
    adamw_block(g + b, m + b, v + b, w + b, n, h);
    pin_block(pin + b, t0 + b, w + b, n);
  }
}

void check_masks(const std::vector<at::Tensor>& masks, const std::vector<at::Tensor>& w,
                 const char* fn) {
  TORCH_CHECK_VALUE(masks.size() == w.size(), fn, ": masks has ", masks.size(),
                    " tensors but w has ", w.size());
  for (size_t i = 0; i < masks.size(); ++i) {
    const at::Tensor& k = masks[i];
    TORCH_CHECK_VALUE(k.defined() && k.scalar_type() == at::kBool && k.is_contiguous() &&
                          k.layout() == at::kStrided,
                      fn, ": masks[", i, "] must be a contiguous bool tensor");
    TORCH_CHECK_VALUE(k.numel() == w[i].numel(), fn, ": masks[", i, "] has ", k.numel(),
                      " elements but w[", i, "] has ", w[i].numel());
    TORCH_CHECK_VALUE(k.device() == w[i].device(), fn, ": masks[", i, "] is on ", k.device(),
                      " but w[", i, "] is on ", w[i].device());
  }
}

}  // namespace

void masked_adamw_(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& grads,
                   const std::vector<at::Tensor>& exp_avg,
                   const std::vector<at::Tensor>& exp_avg_sq,
                   const std::vector<at::Tensor>& theta0, const std::vector<at::Tensor>& masks,
                   const at::Tensor& hyper) {
  constexpr const char* fn = "masked_adamw_";
  if (w.empty() && grads.empty() && exp_avg.empty() && exp_avg_sq.empty() && theta0.empty() &&
      masks.empty()) {
    return;
  }
  const c10::Device device = check_adamw_lists(w, grads, exp_avg, exp_avg_sq, theta0, fn);
  check_masks(masks, w, fn);
  check_table(hyper, static_cast<int64_t>(w.size()), kHyperColumns, device, fn, "hyper");
  TORCH_CHECK_VALUE(!on_cuda(device, fn), fn,
                    ": CPU only (on a GPU MagnitudeMaskAdamW runs its Triton kernel)");
  GilReleasedForWork no_gil;
  const ChunkMap map(w);
  const double* hy = hyper.const_data_ptr<double>();
  map.for_each([&](int64_t t, int64_t, int64_t off, int64_t len) {
    const double* h = hy + kHyperColumns * t;
    const bool* pin = masks[t].const_data_ptr<bool>() + off;
    if (w[t].scalar_type() == at::kDouble) {
      masked_adamw_chunk_f64(w[t].data_ptr<double>() + off,
                             grads[t].const_data_ptr<double>() + off,
                             exp_avg[t].data_ptr<double>() + off,
                             exp_avg_sq[t].data_ptr<double>() + off,
                             theta0[t].const_data_ptr<double>() + off, pin, len,
                             AdamW<double>(h));
      return;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w[t].scalar_type(),
                                    "masked_adamw_cpu", [&] {
      if constexpr (!std::is_same_v<scalar_t, double>) {
        masked_adamw_chunk(w[t].data_ptr<scalar_t>() + off,
                           grads[t].const_data_ptr<scalar_t>() + off,
                           exp_avg[t].data_ptr<scalar_t>() + off,
                           exp_avg_sq[t].data_ptr<scalar_t>() + off,
                           theta0[t].const_data_ptr<scalar_t>() + off, pin, len,
                           AdamW<float>(h));
      }
    });
  });
}

}  // namespace fastpeft
