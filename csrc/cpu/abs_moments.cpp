// CPU abs_moments: row i = (sum |x|, sum x^2, numel) of tensors[i], accumulated in double.
//
// Determinism: every tensor is cut into fixed kChunk-element chunks; each chunk is reduced by a
// single thread in a fixed order into its own slot of `partial`, and the chunks of a tensor are
// then combined sequentially in chunk order. Which thread handles which chunk therefore never
// affects the bits of the result, so it is independent of at::get_num_threads().
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../checks.h"

namespace fastpeft {
namespace {

constexpr int64_t kChunk = int64_t{1} << 16;  // elements per partial; must never depend on threads

// Four interleaved accumulators give the CPU independent dependency chains (strict IEEE order
// forbids the compiler from doing this itself) while keeping the summation order fixed.
template <typename scalar_t>
void chunk_sums(const scalar_t* p, int64_t len, double* out) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  double q[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t j = 0;
  for (; j + 4 <= len; j += 4) {
    for (int k = 0; k < 4; ++k) {
      const double v = static_cast<double>(p[j + k]);
      s[k] += std::abs(v);
      q[k] += v * v;
    }
  }
  for (int k = 0; j < len; ++j, ++k) {
    const double v = static_cast<double>(p[j]);
    s[k] += std::abs(v);
    q[k] += v * v;
  }
  out[0] = (s[0] + s[1]) + (s[2] + s[3]);
  out[1] = (q[0] + q[1]) + (q[2] + q[3]);
}

}  // namespace

// `tensors` must already have passed check_tensor_list() and live on the CPU.
at::Tensor abs_moments_cpu(const std::vector<at::Tensor>& tensors) {
  const int64_t n = static_cast<int64_t>(tensors.size());
  // Raw views taken up front so the parallel region touches no at::Tensor machinery.
  std::vector<const void*> ptrs(n);
  std::vector<int64_t> numels(n);
  std::vector<at::ScalarType> dtypes(n);
  // chunk_begin[i]: index of tensor i's first chunk in the flat list of all chunks. Chunks of all
  // tensors share one parallel_for so that many small tensors still spread over the threads.
  std::vector<int64_t> chunk_begin(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    ptrs[i] = tensors[i].const_data_ptr();
    numels[i] = tensors[i].numel();
    dtypes[i] = tensors[i].scalar_type();
    chunk_begin[i + 1] = chunk_begin[i] + (numels[i] + kChunk - 1) / kChunk;
  }
  const int64_t total = chunk_begin[n];
  std::vector<double> partial(2 * total);

  at::parallel_for(0, total, /*grain_size=*/1, [&](int64_t begin, int64_t end) {
    // Owner of chunk `begin`: the last tensor whose first chunk is <= begin (empty tensors own
    // no chunks and share chunk_begin with their successor, so upper_bound skips them).
    int64_t t = std::upper_bound(chunk_begin.begin(), chunk_begin.end(), begin) -
                chunk_begin.begin() - 1;
    for (int64_t c = begin; c < end; ++c) {
      while (c >= chunk_begin[t + 1]) ++t;
      const int64_t off = (c - chunk_begin[t]) * kChunk;
      const int64_t len = std::min(kChunk, numels[t] - off);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtypes[t], "abs_moments_cpu", [&] {
        chunk_sums(static_cast<const scalar_t*>(ptrs[t]) + off, len, &partial[2 * c]);
      });
    }
  });

  at::Tensor out = at::empty({n, 3}, at::TensorOptions().dtype(at::kDouble));
  double* o = out.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    double s = 0.0, q = 0.0;
    for (int64_t c = chunk_begin[i]; c < chunk_begin[i + 1]; ++c) {
      s += partial[2 * c];
      q += partial[2 * c + 1];
    }
    o[3 * i + 0] = s;
    o[3 * i + 1] = q;
    o[3 * i + 2] = static_cast<double>(numels[i]);  // exact up to 2^53 elements
  }
  return out;
}

}  // namespace fastpeft
