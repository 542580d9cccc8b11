// Torch side of the CUDA abs_moments: turns an at::Tensor list into the raw tables the pure-CUDA
// launcher in abs_moments.cu takes, allocates its workspace through the caching allocator and
// enqueues it on the current stream. Compiled only into CUDA builds (FASTPEFT_WITH_CUDA).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <vector>

#include "../checks.h"
#include "glue_common.h"  // dtype_code, check_launch; launchers.h declares the launchers

namespace fastpeft {

// `tensors` must already have passed check_tensor_list() and live on one CUDA device.
at::Tensor abs_moments_cuda(const std::vector<at::Tensor>& tensors) {
  const int n = static_cast<int>(tensors.size());
  TORCH_CHECK_VALUE(static_cast<size_t>(n) == tensors.size(), "abs_moments: too many tensors");
  const c10::cuda::CUDAGuard guard(tensors[0].device());

  std::vector<const void*> ptrs(n);
  std::vector<int64_t> numels(n);
  std::vector<int> codes(n);
  for (int i = 0; i < n; ++i) {
    ptrs[i] = tensors[i].const_data_ptr();
    numels[i] = tensors[i].numel();
    codes[i] = dtype_code(tensors[i].scalar_type(), "abs_moments");
  }

  const auto opts = at::TensorOptions().dtype(at::kDouble).device(tensors[0].device());
  at::Tensor out = at::empty({n, 3}, opts);
  const int64_t ws_bytes = fastpeft_abs_moments_cuda_workspace_bytes(numels.data(), n);
  // Workspace lives on the caching allocator: freed back to it once `ws` dies, and stream-ordered
  // reuse is safe because every kernel reading it is on the current stream.
  at::Tensor ws = at::empty({ws_bytes / static_cast<int64_t>(sizeof(double))}, opts);

  const cudaError_t err = fastpeft_abs_moments_cuda(
      ptrs.data(), numels.data(), codes.data(), n, out.data_ptr<double>(),
      ws_bytes > 0 ? ws.data_ptr<double>() : nullptr, c10::cuda::getCurrentCUDAStream().stream());
  check_launch(err, "abs_moments");
  return out;
}

}  // namespace fastpeft
