// The fixed chunking that keeps the CPU reductions (abs_moments.cpp, spider.cpp) deterministic.
//
// Every tensor is cut into kChunk-element chunks; one thread reduces a chunk, in a fixed order,
// into its own partial slot, and a tensor's partials are then added in chunk order. Which thread
// handles which chunk never reaches the result bits, so they do not depend on
// at::get_num_threads(). One copy keeps the two files' partitions and combine orders identical.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace fastpeft {

inline constexpr int64_t kChunk = int64_t{1} << 16;  // elements per partial; never thread-dependent

// Chunks of all tensors share one parallel_for so that many small tensors spread over threads.
struct ChunkMap {
  std::vector<int64_t> numel;
  std::vector<int64_t> begin;  // begin[i]: first chunk of tensor i; begin[n]: total chunks

  explicit ChunkMap(const std::vector<at::Tensor>& ts) : numel(ts.size()), begin(ts.size() + 1, 0) {
    for (size_t i = 0; i < ts.size(); ++i) {
      numel[i] = ts[i].numel();
      begin[i + 1] = begin[i] + (numel[i] + kChunk - 1) / kChunk;
    }
  }
  int64_t total() const { return begin.back(); }

  // fn(tensor, chunk, offset, length) for every chunk, in parallel.
  template <typename F>
  void for_each(const F& fn) const {
    at::parallel_for(0, total(), /*grain_size=*/1, [&](int64_t lo, int64_t hi) {
      // Owner of chunk lo: the last tensor whose first chunk is <= lo (empty tensors own no chunks
      // and share begin[] with their successor, so upper_bound skips them).
      int64_t t = std::upper_bound(begin.begin(), begin.end(), lo) - begin.begin() - 1;
      for (int64_t c = lo; c < hi; ++c) {
        while (c >= begin[t + 1]) ++t;
        const int64_t off = (c - begin[t]) * kChunk;
        fn(t, c, off, std::min(kChunk, numel[t] - off));
      }
    });
  }

  // out[i, 0:2] = Σ partial[c, 0:2] over tensor i's chunks, in chunk order (rows `width` apart).
  void combine(const std::vector<double>& partial, double* out, int64_t width) const {
    for (size_t i = 0; i + 1 < begin.size(); ++i) {
      double a = 0.0, b = 0.0;
      for (int64_t c = begin[i]; c < begin[i + 1]; ++c) {
        a += partial[2 * c];
        b += partial[2 * c + 1];
      }
      out[width * i] = a;
      out[width * i + 1] = b;
    }
  }

  // The [n, 3] float64 moments rows (Σ, Σ, numel) from (Σ, Σ) partials, as abs_moments returns.
  at::Tensor moments(const std::vector<double>& partial) const {
    at::Tensor out = at::empty({static_cast<int64_t>(numel.size()), 3}, at::dtype(at::kDouble));
    double* o = out.data_ptr<double>();
    combine(partial, o, 3);
    for (size_t i = 0; i < numel.size(); ++i) {
      o[3 * i + 2] = static_cast<double>(numel[i]);  // exact up to 2^53 elements
    }
    return out;
  }
};

}  // namespace fastpeft
