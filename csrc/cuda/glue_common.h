// Helpers shared by the torch glue of the CUDA launchers (torch_glue.cpp, spider_glue.cpp).
//
// Kept here, beside launchers.h, rather than in csrc/checks.h: checks.h is compiled into every
// build (CPU-only ones too) and validates arguments, while these only translate already-validated
// tensors for the CUDA launchers and report their errors, so they belong to CUDA builds alone.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#include "launchers.h"

namespace fastpeft {

// The launchers' DtypeCode of a tensor dtype. The arguments were checked before (check_list_elem
// admits only these four), so the error is a last guard, named after the calling op `fn`.
inline int dtype_code(at::ScalarType t, const char* fn) {
  switch (t) {
    case at::kFloat: return kF32;
    case at::kHalf: return kF16;
    case at::kBFloat16: return kBF16;
    case at::kDouble: return kF64;
    default: TORCH_CHECK_VALUE(false, fn, ": unsupported dtype ", t);
  }
}

// Raises "<fn>: CUDA launch failed: <reason>" unless a launcher returned cudaSuccess.
inline void check_launch(cudaError_t err, const char* fn) {
  TORCH_CHECK(err == cudaSuccess, fn, ": CUDA launch failed: ", cudaGetErrorString(err));
}

}  // namespace fastpeft
