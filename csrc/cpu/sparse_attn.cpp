// ATen adapter of the sparse attention kernel: argument checks, dtype dispatch, threading.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>

#include "cpu/checks.h"
#include "cpu/registry.h"
#include "kernels/sparse_attn.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry = describe_kernel(
    "sparse_attn", "C++ fused gather + online softmax, each KV row loaded once for all heads, OpenMP over tokens");

template <typename T>
v4k::KvScope<T> scope(const at::Tensor& kv, const at::Tensor& idx, const std::optional<at::Tensor>& length) {
  v4k::KvScope<T> s;
  s.kv = reinterpret_cast<const T*>(kv.data_ptr());
  s.n = kv.size(0);
  s.idx = idx.data_ptr<int32_t>();
  s.width = idx.size(1);
  s.length = length ? length->data_ptr<int32_t>() : nullptr;
  return s;
}

template <typename T, typename A = typename v4k::Acc<T>::type>
void run(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& idx, const std::optional<at::Tensor>& sink,
         double scale, const std::optional<at::Tensor>& extra_kv, const std::optional<at::Tensor>& extra_idx,
         const std::optional<at::Tensor>& length, const std::optional<at::Tensor>& extra_length, at::Tensor& out,
         at::Tensor& lse) {
  const int64_t T_ = q.size(0), H = q.size(1), D = q.size(2);
  v4k::KvScope<T> scopes[2] = {scope<T>(kv, idx, length), {}};
  int n_scopes = 1;
  if (extra_kv) scopes[n_scopes++] = scope<T>(*extra_kv, *extra_idx, extra_length);
  const v4k::SparseAttnShape shape{H, D, scale};
  const A* sink_ptr = sink ? sink->data_ptr<A>() : nullptr;
  const T* q_ptr = reinterpret_cast<const T*>(q.data_ptr());
  T* out_ptr = reinterpret_cast<T*>(out.data_ptr());
  A* lse_ptr = lse.data_ptr<A>();
  std::atomic<bool> in_range{true};
  at::parallel_for(0, T_, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> acc(H * D), qf(H * D), row(D), peak(H), total(H);
    for (int64_t t = begin; t < end; ++t) {
      if (!v4k::sparse_attn_token<T, A>(t, q_ptr + t * H * D, scopes, n_scopes, sink_ptr, shape, out_ptr + t * H * D,
                                        lse_ptr + t * H, acc.data(), qf.data(), row.data(), peak.data(),
                                        total.data()))
        in_range = false;
    }
  });
  TORCH_CHECK_VALUE(in_range, "sparse_attn: 'idx'/'extra_idx' values must be in [-1, pool size)");
}

std::tuple<at::Tensor, at::Tensor> sparse_attn(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& idx,
                                               const std::optional<at::Tensor>& sink, double scale,
                                               const std::optional<at::Tensor>& extra_kv,
                                               const std::optional<at::Tensor>& extra_idx,
                                               const std::optional<at::Tensor>& topk_length,
                                               const std::optional<at::Tensor>& extra_topk_length) {
  const char* op = "sparse_attn";
  check_rank(op, "q", q, 3);
  const int64_t T_ = q.size(0), H = q.size(1), D = q.size(2);
  check_rank(op, "kv", kv, 2);
  TORCH_CHECK_VALUE(kv.size(1) == D, op, ": 'kv' must have ", D, " columns like 'q', got ", kv.size(1));
  check_dtype(op, "kv", kv, q.scalar_type());
  check_index(op, "idx", idx, T_);
  // fp64 data accumulates and returns lse in fp64 (gradcheck); everything else in fp32.
  const auto acc_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  if (sink) {
    TORCH_CHECK_VALUE(sink->scalar_type() == at::kFloat || sink->scalar_type() == at::kDouble, op,
                      ": 'sink' must be float32 or float64, got ", dtype_name(sink->scalar_type()));
    TORCH_CHECK_VALUE(sink->dim() == 1 && sink->size(0) == H, op, ": 'sink' must be [", H, "]");
  }
  TORCH_CHECK_VALUE(extra_kv.has_value() == extra_idx.has_value(), op,
                    ": 'extra_idx' must be given together with 'extra_kv'");
  if (extra_kv) {
    check_rank(op, "extra_kv", *extra_kv, 2);
    TORCH_CHECK_VALUE(extra_kv->size(1) == D, op, ": 'extra_kv' must have ", D, " columns like 'q'");
    check_dtype(op, "extra_kv", *extra_kv, q.scalar_type());
    check_index(op, "extra_idx", *extra_idx, T_);
  }
  TORCH_CHECK_VALUE(extra_kv || !extra_topk_length, op, ": 'extra_topk_length' must be None without 'extra_kv'");
  check_lengths(op, "topk_length", topk_length, T_, idx.size(1));
  if (extra_idx) check_lengths(op, "extra_topk_length", extra_topk_length, T_, extra_idx->size(1));
  entry.calls.fetch_add(1, std::memory_order_relaxed);

  const auto qc = q.contiguous();
  const auto kvc = kv.contiguous();
  const auto idxc = idx.contiguous();
  std::optional<at::Tensor> sinkc, ekv, eidx, len, elen;
  if (sink) sinkc = sink->to(acc_type).contiguous();
  if (extra_kv) ekv = extra_kv->contiguous(), eidx = extra_idx->contiguous();
  if (topk_length) len = topk_length->contiguous();
  if (extra_topk_length) elen = extra_topk_length->contiguous();
  auto out = at::empty_like(qc);
  auto lse = at::empty({T_, H}, q.options().dtype(acc_type));
  switch (q.scalar_type()) {
    case at::kDouble: run<double>(qc, kvc, idxc, sinkc, scale, ekv, eidx, len, elen, out, lse); break;
    case at::kFloat: run<float>(qc, kvc, idxc, sinkc, scale, ekv, eidx, len, elen, out, lse); break;
    case at::kBFloat16: run<v4k::bf16>(qc, kvc, idxc, sinkc, scale, ekv, eidx, len, elen, out, lse); break;
    case at::kHalf: run<_Float16>(qc, kvc, idxc, sinkc, scale, ekv, eidx, len, elen, out, lse); break;
    default: TORCH_CHECK_VALUE(false, op, ": 'q' must be float64, float32, bfloat16 or float16, got ",
                               dtype_name(q.scalar_type()));
  }
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("sparse_attn", &sparse_attn); }

}  // namespace v4_ascend::cpu
