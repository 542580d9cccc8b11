// Counter-based inverted dropout for the CPU LoRA path.
//
// Element (m, k) of an [M, K] tensor is kept iff hash(seed, m, k) >= threshold, with
// threshold = round(p * 2^32): kept with probability 1 - p (to within 2^-32), as nn.Dropout.
// Nothing is stored between forward and backward: the backward recomputes the same decisions
// from the seed. The hash is a per-row splitmix64 key followed by a 32-bit integer mixer
// (Wellons' "lowbias32" constants) on the column index: 32-bit multiplies and shifts
// auto-vectorise, which is what makes this several times cheaper than aten::bernoulli_ here.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <cstdint>

#include "../checks.h"

namespace fastpeft {
namespace {

inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

inline uint32_t row_key(int64_t seed, int64_t row) {
  return static_cast<uint32_t>(splitmix64(static_cast<uint64_t>(seed) ^ splitmix64(row)));
}

inline bool keep(uint32_t key, int64_t col, uint32_t threshold) {
  return mix32(key ^ (static_cast<uint32_t>(col) * 0x9E3779B9u)) >= threshold;
}

uint32_t keep_threshold(double p) {
  TORCH_CHECK_VALUE(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p);
  return static_cast<uint32_t>(std::llround(p * 4294967296.0));
}

constexpr int64_t kRowGrain = 8;

}  // namespace

// t[m, k] *= keep(seed, m, k) / (1 - p), in place; t must be a contiguous 2-D float tensor.
at::Tensor dropout_inplace_cpu(at::Tensor t, int64_t seed, double p) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "dropout_: t must be a CPU tensor, got ", t.device());
  TORCH_CHECK_VALUE(t.dim() == 2, "dropout_: t must be 2-D, got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.is_contiguous(), "dropout_: t must be contiguous");
  TORCH_CHECK_VALUE(is_supported_float(t.scalar_type()),
                    "dropout_: t must be float32/float16/bfloat16/float64, got ", t.scalar_type());
  const uint32_t threshold = keep_threshold(p);
  GilReleasedForWork no_gil;
  const int64_t rows = t.size(0), cols = t.size(1);
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "dropout_", [&] {
    scalar_t* data = t.data_ptr<scalar_t>();
    at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        const uint32_t key = row_key(seed, m);
        scalar_t* row = data + m * cols;
        for (int64_t k = 0; k < cols; ++k) {
          const float v = static_cast<float>(row[k]) * scale;
          row[k] = static_cast<scalar_t>(keep(key, k, threshold) ? v : 0.0f);
        }
      }
    });
  });
  return t;
}

// The [rows, cols] bool keep-mask dropout_inplace_cpu applies (for tests).
at::Tensor dropout_keep_mask_cpu(int64_t seed, int64_t rows, int64_t cols, double p) {
  TORCH_CHECK_VALUE(rows >= 0 && cols >= 0, "dropout_keep_mask: negative shape");
  const uint32_t threshold = keep_threshold(p);
  at::Tensor mask = at::empty({rows, cols}, at::TensorOptions().dtype(at::kBool));
  bool* data = mask.data_ptr<bool>();
  at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const uint32_t key = row_key(seed, m);
      for (int64_t k = 0; k < cols; ++k) data[m * cols + k] = keep(key, k, threshold);
    }
  });
  return mask;
}

}  // namespace fastpeft
