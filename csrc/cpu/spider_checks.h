// Argument checks of the SPIDER entry points (spider.cpp, spider_adamw.cpp): every message names
// the function and the offending list ("<fn>: G[3] must be float32 ...").
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../checks.h"

namespace fastpeft {
namespace {

void check_pairs(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b,
                 const char* fn, const char* an, const char* bn, bool same_dtype) {
  TORCH_CHECK_VALUE(a.size() == b.size(), fn, ": ", an, " and ", bn, " differ in length (",
                    a.size(), " vs ", b.size(), ")");
  for (size_t i = 0; i < a.size(); ++i) {
    TORCH_CHECK_VALUE(a[i].numel() == b[i].numel(), fn, ": ", an, "[", i, "] has ", a[i].numel(),
                      " elements but ", bn, "[", i, "] has ", b[i].numel());
    TORCH_CHECK_VALUE(!same_dtype || a[i].scalar_type() == b[i].scalar_type(), fn, ": ", an, "[",
                      i, "] is ", a[i].scalar_type(), " but ", bn, "[", i, "] is ",
                      b[i].scalar_type());
  }
}

void check_G(const std::vector<at::Tensor>& G, const char* fn) {
  for (size_t i = 0; i < G.size(); ++i) {
    TORCH_CHECK_VALUE(G[i].scalar_type() == at::kFloat, fn, ": G[", i,
                      "] must be float32, got ", G[i].scalar_type());
  }
}

void check_table(const at::Tensor& m, int64_t n, int64_t width, const c10::Device& device,
                 const char* fn, const char* name) {
  TORCH_CHECK_VALUE(m.defined() && m.scalar_type() == at::kDouble && m.dim() == 2 &&
                        m.size(0) == n && m.size(1) == width && m.is_contiguous(),
                    fn, ": ", name, " must be a contiguous float64 tensor of shape [", n, ", ",
                    width, "]");
  TORCH_CHECK_VALUE(m.device() == device, fn, ": ", name, " is on ", m.device(),
                    " but the tensors are on ", device);
}

using NamedList = std::pair<const std::vector<at::Tensor>*, const char*>;

// Checks that the lists have one length, then each list (named in messages: "<fn> (<name>):
// tensors[i] ..."), and that all share one device; returns it.
c10::Device check_lists(std::initializer_list<NamedList> lists, const char* fn) {
  const NamedList& first = *lists.begin();
  for (const auto& [list, name] : lists) {
    TORCH_CHECK_VALUE(list->size() == first.first->size(), fn, ": ", name, " has ", list->size(),
                      " tensors but ", first.second, " has ", first.first->size());
  }
  std::optional<c10::Device> device;
  for (const auto& [list, name] : lists) {
    const std::string where = std::string(fn) + " (" + name + ")";
    const c10::Device d = check_tensor_list(*list, where.c_str());
    if (!device) device = d;
    TORCH_CHECK_VALUE(d == *device, fn, ": ", name, " is on ", d, " but ", first.second,
                      " is on ", *device);
  }
  return *device;
}

// The operand lists of a fused AdamW pass (spider_adamw.cpp, masked_adamw.cpp): one length, one
// device, each list's sizes and dtype those of w; returns the device.
c10::Device check_adamw_lists(const std::vector<at::Tensor>& w,
                              const std::vector<at::Tensor>& grads,
                              const std::vector<at::Tensor>& exp_avg,
                              const std::vector<at::Tensor>& exp_avg_sq,
                              const std::vector<at::Tensor>& theta0, const char* fn) {
  const c10::Device device = check_lists({{&w, "w"},
                                          {&grads, "grads"},
                                          {&exp_avg, "exp_avg"},
                                          {&exp_avg_sq, "exp_avg_sq"},
                                          {&theta0, "theta0"}},
                                         fn);
  check_pairs(w, grads, fn, "w", "grads", true);
  check_pairs(w, exp_avg, fn, "w", "exp_avg", true);
  check_pairs(w, exp_avg_sq, fn, "w", "exp_avg_sq", true);
  check_pairs(w, theta0, fn, "w", "theta0", true);
  return device;
}

// An optional list of fp32 c_raw buffers, one per G (empty: none). The CPU passes keep c_raw in
// it between pass 2 and SpiderAdamW's fused pass; the GPU passes recompute it (cheaper there
// than 8 more bytes per element), so a list on a CUDA device is refused.
void check_c_raw(const std::vector<at::Tensor>& c, const std::vector<at::Tensor>& G, bool cuda,
                 const char* fn, const char* name) {
  if (c.empty()) return;
  TORCH_CHECK_VALUE(!cuda, fn, ": ", name, " is CPU-only (the CUDA passes recompute c_raw)");
  TORCH_CHECK_VALUE(c.size() == G.size(), fn, ": ", name, " has ", c.size(),
                    " tensors but G has ", G.size());
  check_lists({{&c, name}, {&G, "G"}}, fn);
  check_pairs(c, G, fn, name, "G", true);
}

}  // namespace
}  // namespace fastpeft
