// Torch side of the CUDA SPIDER passes and of SpiderAdamW's fused pass (spider_adamw.cu): at::Tensor lists -> the raw tables of the pure-CUDA
// launchers in spider.cu, workspace from the caching allocator, launches on the current stream.
// Compiled only into CUDA builds (FASTPEFT_WITH_CUDA); arguments were validated by
// csrc/cpu/spider.cpp before these are called.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <vector>

#include "glue_common.h"  // dtype_code, check_launch; launchers.h declares the launchers

namespace fastpeft {
namespace {

// Raw views of one call's tensor lists.
struct Tables {
  std::vector<int64_t> numels;
  std::vector<int> codes;  // dtype of `typed`
  std::vector<const void*> typed;
  std::vector<float*> G;
  int n;

  Tables(const std::vector<at::Tensor>& typed_list, const std::vector<at::Tensor>& G_list)
      : numels(G_list.size()), codes(G_list.size()), typed(G_list.size()), G(G_list.size()),
        n(static_cast<int>(G_list.size())) {
    TORCH_CHECK_VALUE(static_cast<size_t>(n) == G_list.size(), "spider: too many tensors");
    for (int i = 0; i < n; ++i) {
      numels[i] = G_list[i].numel();
      codes[i] = dtype_code(typed_list[i].scalar_type(), "spider");
      typed[i] = typed_list[i].const_data_ptr();
      G[i] = G_list[i].mutable_data_ptr<float>();  // written by pass 1 only
    }
  }

  at::Tensor workspace(const at::TensorOptions& opts) const {
    const int64_t bytes = fastpeft_spider_workspace_bytes(numels.data(), n);
    return at::empty({bytes / static_cast<int64_t>(sizeof(double))}, opts);
  }
};

at::TensorOptions f64_on(const at::Tensor& t) {
  return at::TensorOptions().dtype(at::kDouble).device(t.device());
}

double* ptr_or_null(at::Tensor& t) { return t.numel() > 0 ? t.data_ptr<double>() : nullptr; }

}  // namespace

at::Tensor spider_accumulate_cuda(const std::vector<at::Tensor>& G,
                                  const std::vector<at::Tensor>& grads) {
  const c10::cuda::CUDAGuard guard(G[0].device());
  const Tables tab(grads, G);
  at::Tensor out = at::empty({tab.n, 3}, f64_on(G[0]));
  at::Tensor ws = tab.workspace(f64_on(G[0]));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  check_launch(fastpeft_spider_accumulate_cuda(tab.G.data(), tab.typed.data(), tab.codes.data(),
                                               tab.numels.data(), tab.n, out.data_ptr<double>(),
                                               ptr_or_null(ws), stream),
               "spider_accumulate");
  return out;
}

at::Tensor spider_select_sums_cuda(const std::vector<at::Tensor>& theta0,
                                   const std::vector<at::Tensor>& G, const at::Tensor& pre,
                                   const at::Tensor& ft) {
  const c10::cuda::CUDAGuard guard(G[0].device());
  const Tables tab(theta0, G);
  at::Tensor out = at::empty({tab.n, 2}, f64_on(G[0]));
  at::Tensor ws = tab.workspace(f64_on(G[0]));
  std::vector<const float*> Gc(tab.G.begin(), tab.G.end());
  check_launch(
      fastpeft_spider_select_cuda(tab.typed.data(), Gc.data(), tab.codes.data(), tab.numels.data(),
                                  tab.n, pre.const_data_ptr<double>(), ft.const_data_ptr<double>(),
                                  out.data_ptr<double>(), ptr_or_null(ws),
                                  c10::cuda::getCurrentCUDAStream().stream()),
      "spider_select_sums");
  return out;
}

void spider_blend_cuda(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& theta0,
                       const std::vector<at::Tensor>& G, const at::Tensor& pre,
                       const at::Tensor& ft, const at::Tensor& sel) {
  const c10::cuda::CUDAGuard guard(G[0].device());
  const Tables tab(theta0, G);
  std::vector<void*> wp(tab.n);
  for (int i = 0; i < tab.n; ++i) wp[i] = w[i].data_ptr();
  std::vector<const float*> Gc(tab.G.begin(), tab.G.end());
  check_launch(
      fastpeft_spider_blend_cuda(wp.data(), tab.typed.data(), Gc.data(), tab.codes.data(),
                                 tab.numels.data(), tab.n, pre.const_data_ptr<double>(),
                                 ft.const_data_ptr<double>(), sel.const_data_ptr<double>(),
                                 c10::cuda::getCurrentCUDAStream().stream()),
      "spider_blend_");
}

void spider_adamw_blend_cuda(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& grads,
                             const std::vector<at::Tensor>& exp_avg,
                             const std::vector<at::Tensor>& exp_avg_sq,
                             const std::vector<at::Tensor>& theta0,
                             const std::vector<at::Tensor>& G, const at::Tensor& hyper,
                             const at::Tensor& pre, const at::Tensor& ft, const at::Tensor& sel) {
  const c10::cuda::CUDAGuard guard(G[0].device());
  const Tables tab(theta0, G);
  std::vector<void*> wp(tab.n), mp(tab.n), vp(tab.n);
  std::vector<const void*> gp(tab.n);
  for (int i = 0; i < tab.n; ++i) {
    wp[i] = w[i].data_ptr();
    gp[i] = grads[i].const_data_ptr();
    mp[i] = exp_avg[i].data_ptr();
    vp[i] = exp_avg_sq[i].data_ptr();
  }
  std::vector<const float*> Gc(tab.G.begin(), tab.G.end());
  check_launch(fastpeft_spider_adamw_blend_cuda(
                   wp.data(), gp.data(), mp.data(), vp.data(), tab.typed.data(), Gc.data(),
                   tab.codes.data(), tab.numels.data(), tab.n, hyper.const_data_ptr<double>(),
                   pre.const_data_ptr<double>(), ft.const_data_ptr<double>(),
                   sel.const_data_ptr<double>(), c10::cuda::getCurrentCUDAStream().stream()),
               "spider_adamw_blend_");
}

}  // namespace fastpeft
