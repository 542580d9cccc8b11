// Argument checks shared by the fastpeft._C entry points.
//
// Every message names the offending list element as `tensors[i]` so that a Python caller can
// find the bad argument without a debugger. TORCH_CHECK_VALUE surfaces as ValueError in Python.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <pybind11/pybind11.h>

#include <vector>

namespace fastpeft {

// Fails with ValueError: "<fn>: tensors[<i>] <message...>".
#define FASTPEFT_CHECK_ELEM(cond, fn, i, ...) \
  TORCH_CHECK_VALUE((cond), fn, ": tensors[", (i), "] ", __VA_ARGS__)

// Every entry point checks its arguments with the GIL held and releases it only for the work
// (declare one of these right after the checks). Raising with the GIL released crashed: on an
// H200 (torch 2.11+cu130) a bad argument to abs_moments segfaulted instead of raising
// ValueError when the binding released the GIL for the whole call; a CUDA build of torch can
// touch Python state while building a c10::Error (pytorch/pytorch#92848 is the same trap).
// Kernel-launch failures after the release remain rare and are reported the same way.
using GilReleasedForWork = pybind11::gil_scoped_release;

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

// Checks one element of a tensor list: defined, strided, contiguous, floating point and on
// `device`. Contiguity is required (not silently fixed with .contiguous()) because a hidden copy
// would double the memory traffic of what is meant to be a bandwidth-bound reduction.
inline void check_list_elem(const at::Tensor& t, size_t i, const c10::Device& device,
                            const char* fn) {
  FASTPEFT_CHECK_ELEM(t.defined(), fn, i, "is an undefined tensor");
  FASTPEFT_CHECK_ELEM(t.layout() == at::kStrided, fn, i, "must be a strided (dense) tensor, got ",
                      t.layout());
  FASTPEFT_CHECK_ELEM(is_supported_float(t.scalar_type()), fn, i,
                      "must be float32/float16/bfloat16/float64, got dtype ", t.scalar_type());
  FASTPEFT_CHECK_ELEM(t.device() == device, fn, i, "is on device ", t.device(),
                      " but tensors[0] is on ", device, "; all tensors must share one device");
  FASTPEFT_CHECK_ELEM(t.is_contiguous(), fn, i, "must be contiguous (shape ", t.sizes(),
                      ", strides ", t.strides(), "); call .contiguous() first");
}

// True for CUDA tensors (the caller then routes to the CUDA implementation), false for CPU ones;
// any other device is a ValueError. Shared so that every entry point accepts the same devices and
// words the refusal the same way.
inline bool on_cuda(const c10::Device& device, const char* fn) {
  if (device.is_cuda()) return true;
  TORCH_CHECK_VALUE(device.is_cpu(), fn, ": unsupported device ", device,
                    " (expected cpu or cuda)");
  return false;
}

// Tail of the error a CPU-only build raises for CUDA tensors ("<fn>: tensors are on ... but "
// followed by this), kept in one place so every entry point gives the same rebuild instructions.
inline constexpr const char* kBuiltWithoutCuda =
    "fastpeft._C was built without CUDA support; rebuild it with a CUDA build of torch and the "
    "CUDA toolkit: pip install -e . --no-build-isolation";

// Validates a whole list and returns the common device. The list must be non-empty.
inline c10::Device check_tensor_list(const std::vector<at::Tensor>& tensors, const char* fn) {
  TORCH_CHECK_VALUE(!tensors.empty(), fn, ": expected a non-empty tensor list");
  FASTPEFT_CHECK_ELEM(tensors[0].defined(), fn, 0, "is an undefined tensor");
  const c10::Device device = tensors[0].device();
  for (size_t i = 0; i < tensors.size(); ++i) check_list_elem(tensors[i], i, device, fn);
  return device;
}

}  // namespace fastpeft
