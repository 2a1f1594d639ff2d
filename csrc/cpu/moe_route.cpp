// ATen adapter of the V4 router. The scores sqrt(softplus(logits)) run through the same ATen ops as the
// reference, so the indices are bit-identical to it; the selection that the reference does with a full
// stable sort of [T, E] is one C++ scan per token, which also normalises the weights (within a few ulps).
// Non-contiguous inputs are made contiguous; index tensors are widened to int64 (small copies).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "cpu/checks.h"
#include "cpu/moe_route.h"
#include "cpu/registry.h"
#include "kernels/moe_route.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry = describe_kernel(
    "moe_route", "ATen sqrt-softplus scores + C++ per-token top-k scan and gather (no full sort)");

constexpr int64_t kTokensPerTask = 64;

void check_route_float(const char* op, const char* arg, const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op, ": '", arg,
                    "' must be float32 or float64, got ", dtype_name(x.scalar_type()));
}

void check_ids(const char* op, const char* arg, const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.scalar_type() == at::kInt || x.scalar_type() == at::kLong, op, ": '", arg,
                    "' must be int32 or int64, got ", dtype_name(x.scalar_type()));
}

// Like v4_ascend._validation.index_range: values in [0, upper), reporting the offending extreme.
void check_range(const char* op, const char* arg, const at::Tensor& x, int64_t upper) {
  const int64_t* v = x.data_ptr<int64_t>();
  if (v4k::first_out_of_range(v, x.numel(), upper) < 0) return;
  const int64_t lo = *std::min_element(v, v + x.numel()), hi = *std::max_element(v, v + x.numel());
  TORCH_CHECK_VALUE(false, op, ": '", arg, "' values must be in [0, ", upper, "), found ", lo < 0 ? lo : hi);
}

template <typename A, typename S>
void run(const at::Tensor& scores, const std::optional<at::Tensor>& bias, const at::Tensor& hashed, int64_t k,
         double route_scale, at::Tensor& picked, at::Tensor& idx) {
  const int64_t T_ = scores.size(0), E = scores.size(1);
  const A* s = scores.data_ptr<A>();
  const S* b = bias ? bias->data_ptr<S>() : nullptr;
  const int64_t* h = hashed.defined() ? hashed.data_ptr<int64_t>() : nullptr;
  A* p = picked.data_ptr<A>();
  int32_t* out = idx.data_ptr<int32_t>();
  at::parallel_for(0, T_, kTokensPerTask, [&](int64_t begin, int64_t end) {
    std::vector<v4k::Candidate<S>> best(k);
    for (int64_t t = begin; t < end; ++t)
      v4k::moe_route_token<A, S>(s + t * E, b, E, k, h ? h + t * k : nullptr, route_scale, p + t * k, out + t * k,
                                 best.data());
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> route_experts(const at::Tensor& logits, int64_t topk, double route_scale,
                                                 const std::optional<at::Tensor>& bias,
                                                 const std::optional<at::Tensor>& token_ids,
                                                 const std::optional<at::Tensor>& tid2eid) {
  const char* op = "moe_route";
  check_rank(op, "logits", logits, 2);
  check_route_float(op, "logits", logits);
  const int64_t T_ = logits.size(0), E = logits.size(1);
  TORCH_CHECK_VALUE(topk >= 1 && topk <= E, op, ": 'topk' must be an int in [1, ", E, "] (the number of experts), got ",
                    topk);
  if (bias) {
    check_route_float(op, "bias", *bias);
    check_shape(op, "bias", *bias, {E});
  }
  TORCH_CHECK_VALUE(token_ids.has_value() == tid2eid.has_value(), op,
                    ": 'tid2eid' must be given together with 'token_ids' (hash routing), got only one of them");
  at::Tensor hashed;
  if (tid2eid) {
    check_ids(op, "token_ids", *token_ids);
    check_shape(op, "token_ids", *token_ids, {T_});
    check_ids(op, "tid2eid", *tid2eid);
    TORCH_CHECK_VALUE(tid2eid->dim() == 2 && tid2eid->size(1) == topk, op, ": 'tid2eid' must be of shape [*, ", topk,
                      "], got ", tid2eid->sizes());
    // Only the rows of the batch's tokens are read (and range-checked): the table has one row per
    // vocabulary entry (129,280 in V4), far more than a decode step touches.
    const auto ids = token_ids->to(at::kLong).contiguous();
    check_range(op, "token_ids", ids, tid2eid->size(0));
    hashed = tid2eid->index_select(0, ids).to(at::kLong).contiguous();
    check_range(op, "tid2eid", hashed, E);
  }

  // fp64 then one rounding, exactly as the reference (PyTorch's fp32 softplus can give equal logits
  // different last bits, which would break the lower-index tie rule).
  // In place where the reference allocates: the same ATen ops give the same bits, and each allocation
  // costs about half a microsecond of a decode step's few-microsecond budget.
  auto fp64 = logits.to(at::kDouble, /*non_blocking=*/false, /*copy=*/true).contiguous();
  at::softplus_out(fp64, fp64, 1.0, 20.0);
  const auto scores = fp64.sqrt_().to(logits.scalar_type()).contiguous();
  const bool wide = logits.scalar_type() == at::kDouble || (bias && bias->scalar_type() == at::kDouble);
  std::optional<at::Tensor> select_bias;
  if (bias && !hashed.defined()) select_bias = bias->to(wide ? at::kDouble : at::kFloat).contiguous();
  auto picked = at::empty({T_, topk}, logits.options());
  auto idx = at::empty({T_, topk}, logits.options().dtype(at::kInt));
  if (logits.scalar_type() == at::kDouble)
    run<double, double>(scores, select_bias, hashed, topk, route_scale, picked, idx);
  else if (wide)
    run<float, double>(scores, select_bias, hashed, topk, route_scale, picked, idx);
  else
    run<float, float>(scores, select_bias, hashed, topk, route_scale, picked, idx);
  return {picked, idx};
}

namespace {

std::tuple<at::Tensor, at::Tensor> moe_route(const at::Tensor& logits, int64_t topk, double route_scale,
                                             const std::optional<at::Tensor>& bias,
                                             const std::optional<at::Tensor>& token_ids,
                                             const std::optional<at::Tensor>& tid2eid) {
  auto routed = route_experts(logits, topk, route_scale, bias, token_ids, tid2eid);
  entry.calls.fetch_add(1, std::memory_order_relaxed);
  return routed;
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("moe_route", &moe_route); }

}  // namespace v4_ascend::cpu
