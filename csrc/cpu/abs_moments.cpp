// CPU abs_moments: row i = (sum |x|, sum x^2, numel) of tensors[i], accumulated in double.
//
// Determinism: the fixed chunking of chunk_map.h (shared with spider.cpp); each chunk is reduced
// by chunk_sums in a fixed order, so the result does not depend on at::get_num_threads().
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include <cmath>
#include <vector>

#include "../checks.h"
#include "chunk_map.h"

namespace fastpeft {
namespace {

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
  const ChunkMap map(tensors);
  // Raw views taken up front so the parallel region touches no at::Tensor machinery.
  std::vector<const void*> ptrs(n);
  std::vector<at::ScalarType> dtypes(n);
  for (int64_t i = 0; i < n; ++i) {
    ptrs[i] = tensors[i].const_data_ptr();
    dtypes[i] = tensors[i].scalar_type();
  }
  std::vector<double> partial(2 * map.total());
  map.for_each([&](int64_t t, int64_t c, int64_t off, int64_t len) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtypes[t], "abs_moments_cpu", [&] {
      chunk_sums(static_cast<const scalar_t*>(ptrs[t]) + off, len, &partial[2 * c]);
    });
  });
  return map.moments(partial);
}

}  // namespace fastpeft
