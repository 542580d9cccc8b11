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
// SPIDER engine (cpu/spider.cpp: checks, CPU kernels and the CUDA routing).
at::Tensor spider_accumulate(const std::vector<at::Tensor>& G,
                             const std::vector<at::Tensor>& grads);
at::Tensor spider_select_sums(const std::vector<at::Tensor>& theta0,
                              const std::vector<at::Tensor>& G, const at::Tensor& pre,
                              const at::Tensor& ft, const std::vector<at::Tensor>& c_out);
void spider_blend_(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& theta0,
                   const std::vector<at::Tensor>& G, const at::Tensor& pre, const at::Tensor& ft,
                   const at::Tensor& sel);
// SpiderAdamW's fused AdamW + blend pass (cpu/spider_adamw.cpp).
void spider_adamw_blend_(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& grads,
                         const std::vector<at::Tensor>& exp_avg,
                         const std::vector<at::Tensor>& exp_avg_sq,
                         const std::vector<at::Tensor>& theta0, const std::vector<at::Tensor>& G,
                         const at::Tensor& hyper, const at::Tensor& pre, const at::Tensor& ft,
                         const at::Tensor& sel, const std::vector<at::Tensor>& c_raw);
// MagnitudeMaskAdamW's fused AdamW + pin pass (cpu/masked_adamw.cpp), CPU only.
void masked_adamw_(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& grads,
                   const std::vector<at::Tensor>& exp_avg,
                   const std::vector<at::Tensor>& exp_avg_sq,
                   const std::vector<at::Tensor>& theta0, const std::vector<at::Tensor>& masks,
                   const at::Tensor& hyper);
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
  if (on_cuda(device, "abs_moments")) {
#ifdef FASTPEFT_WITH_CUDA
    GilReleasedForWork no_gil;
    return abs_moments_cuda(tensors);
#else
    TORCH_CHECK(false, "abs_moments: tensors are on ", device, " but ", kBuiltWithoutCuda);
#endif
  }
  GilReleasedForWork no_gil;
  return abs_moments_cpu(tensors);
}

}  // namespace fastpeft

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastpeft C++/CUDA kernels";
  // The entry points release the GIL themselves once their arguments are checked (see
  // GilReleasedForWork in checks.h): the CPU paths are long multi-threaded loops and other
  // Python threads (data loading) should keep running meanwhile.
  m.def("abs_moments", &fastpeft::abs_moments, pybind11::arg("tensors"),
        "abs_moments(tensors: list[Tensor]) -> Tensor[n, 3] float64\n\n"
        "Row i is (sum |x|, sum x**2, numel) of tensors[i], accumulated in float64 with a fixed\n"
        "reduction order (bitwise deterministic for a given device). Tensors must be contiguous,\n"
        "floating point and on one device; the result is on that device ([0, 3] on CPU for an\n"
        "empty list).");
  m.def("dropout_", &fastpeft::dropout_inplace_cpu, pybind11::arg("t"), pybind11::arg("seed"),
        pybind11::arg("p"), "dropout_(t: Tensor[M, K], seed: int, p: float) -> t\n\n"
        "In place on a contiguous 2-D CPU float tensor: t[m, k] *= keep(seed, m, k) / (1 - p),\n"
        "with counter-based keep decisions (probability 1 - p) recomputable from the seed.");
  m.def("dropout_keep_mask", &fastpeft::dropout_keep_mask_cpu, pybind11::arg("seed"),
        pybind11::arg("rows"), pybind11::arg("cols"), pybind11::arg("p"),
        "dropout_keep_mask(seed, rows, cols, p) -> bool Tensor: the mask dropout_ applies.");
  m.def("spider_accumulate", &fastpeft::spider_accumulate, pybind11::arg("G"),
        pybind11::arg("grads"), "spider_accumulate(G: list[Tensor fp32], grads: list[Tensor]) -> Tensor[n, 3] float64\n\n"
        "In place G[i] += grads[i]; row i of the result is (sum |G[i]|, sum G[i]**2, numel) of\n"
        "the updated G[i] (fixed reduction order). Lists of one length, contiguous, one device.");
  m.def("spider_select_sums", &fastpeft::spider_select_sums, pybind11::arg("theta0"),
        pybind11::arg("G"), pybind11::arg("moments_pre"), pybind11::arg("moments_ft"),
        pybind11::arg("c_out") = std::vector<at::Tensor>{},
        "spider_select_sums(theta0, G, moments_pre[n, 3], moments_ft[n, 3], c_out=[]) -> Tensor[n, 2]\n\n"
        "Row i: (sum c_raw, count(c_raw > 0)) of tensor i, c_raw = I_ft / (I_pre + I_ft) where\n"
        "I_pre < I_ft else 0, I_pre = R(theta0[i]), I_ft = R(G[i]) with R's mean/std taken from\n"
        "the (sum|x|, sum x**2, numel) moments rows (float64). CPU only: c_raw itself is also\n"
        "written to c_out (fp32 tensors like G) when given.");
  m.def("spider_blend_", &fastpeft::spider_blend_, pybind11::arg("w"), pybind11::arg("theta0"),
        pybind11::arg("G"), pybind11::arg("moments_pre"), pybind11::arg("moments_ft"),
        pybind11::arg("select_sums"), "spider_blend_(w, theta0, G, moments_pre, moments_ft, select_sums) -> None\n\n"
        "In place w[i] = theta0[i] + min(c_raw / m, 1) * (w[i] - theta0[i]), m = sum / count\n"
        "from select_sums row i; tensors with count 0 are left unchanged.");
  m.def("spider_adamw_blend_", &fastpeft::spider_adamw_blend_, pybind11::arg("w"),
        pybind11::arg("grads"), pybind11::arg("exp_avg"), pybind11::arg("exp_avg_sq"),
        pybind11::arg("theta0"), pybind11::arg("G"), pybind11::arg("hyper"),
        pybind11::arg("moments_pre"), pybind11::arg("moments_ft"), pybind11::arg("select_sums"),
        pybind11::arg("c_raw") = std::vector<at::Tensor>{},
        "spider_adamw_blend_(w, grads, exp_avg, exp_avg_sq, theta0, G, hyper[n, 6], moments_pre,\n"
        "moments_ft, select_sums, c_raw=[]) -> None\n\n"
        "In place, per element of tensor i: AdamW's moment and parameter update with row i of\n"
        "hyper = (1 - lr*wd, lr/bc1, beta1, beta2, eps, sqrt(bc2)), then SPIDER's blend of the\n"
        "updated value (as spider_blend_, on a tensor whose count is nonzero); one read and one\n"
        "write of w, exp_avg and exp_avg_sq, reads of grads, theta0 and G. CPU only: with c_raw\n"
        "(what spider_select_sums wrote to c_out) read instead of computed from theta0 and G.");
  m.def("masked_adamw_", &fastpeft::masked_adamw_, pybind11::arg("w"), pybind11::arg("grads"),
        pybind11::arg("exp_avg"), pybind11::arg("exp_avg_sq"), pybind11::arg("theta0"),
        pybind11::arg("masks"), pybind11::arg("hyper"),
        "masked_adamw_(w, grads, exp_avg, exp_avg_sq, theta0, masks, hyper[n, 6]) -> None\n\n"
        "In place, per element of tensor i: AdamW's moment and parameter update with row i of\n"
        "hyper (as spider_adamw_blend_), then w = theta0 where masks[i] (bool) pins the element;\n"
        "one read and one write of w, exp_avg and exp_avg_sq, reads of grads, theta0 and masks.\n"
        "CPU only.");
  m.def("has_cuda", [] { return fastpeft::kHasCuda; },
        "True if this build of fastpeft._C includes the CUDA kernels.");
}
