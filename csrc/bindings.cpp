// Python bindings of fastpeft._C. Validation happens here, once, before dispatching to the CPU
// or CUDA implementation, so both back ends see the same, already-checked arguments.
// torch/python.h (not torch/extension.h) brings the at::Tensor <-> Python casters without the
// whole C++ frontend, which cuts this file's compile time by about a third.
#include <ATen/ops/zeros.h>
#include <torch/python.h>

#include <vector>

#include "checks.h"

namespace fastpeft {

at::Tensor abs_moments_cpu(const std::vector<at::Tensor>& tensors);
at::Tensor dropout_inplace_cpu(at::Tensor t, int64_t seed, double p);
at::Tensor dropout_keep_mask_cpu(int64_t seed, int64_t rows, int64_t cols, double p);
#ifdef FASTPEFT_WITH_CUDA
at::Tensor abs_moments_cuda(const std::vector<at::Tensor>& tensors);
#endif

constexpr bool kHasCuda =
#ifdef FASTPEFT_WITH_CUDA
    true;
#else
    false;
#endif

at::Tensor abs_moments(const std::vector<at::Tensor>& tensors) {
  if (tensors.empty()) return at::zeros({0, 3}, at::TensorOptions().dtype(at::kDouble));
  const c10::Device device = check_tensor_list(tensors, "abs_moments");
  if (device.is_cuda()) {
#ifdef FASTPEFT_WITH_CUDA
    return abs_moments_cuda(tensors);
#else
    TORCH_CHECK(false, "abs_moments: tensors are on ", device,
                " but fastpeft._C was built without CUDA support; rebuild it with a CUDA build of "
                "torch and the CUDA toolkit: pip install -e . --no-build-isolation");
#endif
  }
  TORCH_CHECK_VALUE(device.is_cpu(), "abs_moments: unsupported device ", device,
                    " (expected cpu or cuda)");
  return abs_moments_cpu(tensors);
}

}  // namespace fastpeft

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastpeft C++/CUDA kernels";
  // The GIL is released while the kernels run: the CPU path is a long multi-threaded loop and
  // other Python threads (data loading) should keep running meanwhile.
  m.def("abs_moments", &fastpeft::abs_moments, pybind11::arg("tensors"),
        pybind11::call_guard<pybind11::gil_scoped_release>(),
        "abs_moments(tensors: list[Tensor]) -> Tensor[n, 3] float64\n\n"
        "Row i is (sum |x|, sum x**2, numel) of tensors[i], accumulated in float64 with a fixed\n"
        "reduction order (bitwise deterministic for a given device). Tensors must be contiguous,\n"
        "floating point and on one device; the result is on that device ([0, 3] on CPU for an\n"
        "empty list).");
  m.def("dropout_", &fastpeft::dropout_inplace_cpu, pybind11::arg("t"), pybind11::arg("seed"),
        pybind11::arg("p"), pybind11::call_guard<pybind11::gil_scoped_release>(),
        "dropout_(t: Tensor[M, K], seed: int, p: float) -> t\n\n"
        "In place on a contiguous 2-D CPU float tensor: t[m, k] *= keep(seed, m, k) / (1 - p),\n"
        "with counter-based keep decisions (probability 1 - p) recomputable from the seed.");
  m.def("dropout_keep_mask", &fastpeft::dropout_keep_mask_cpu, pybind11::arg("seed"),
        pybind11::arg("rows"), pybind11::arg("cols"), pybind11::arg("p"),
        "dropout_keep_mask(seed, rows, cols, p) -> bool Tensor: the mask dropout_ applies.");
  m.def("has_cuda", [] { return fastpeft::kHasCuda; },
        "True if this build of fastpeft._C includes the CUDA kernels.");
}
