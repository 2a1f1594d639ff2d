// ATen adapter of the sparse attention kernels: argument checks, dtype and ISA dispatch, threading.
// Non-contiguous inputs are made contiguous here (a copy of that input), never rejected.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <type_traits>
#include <vector>

#include "cpu/checks.h"
#include "cpu/fresh_output.h"
#include "cpu/registry.h"
#include "kernels/isa.h"
#include "kernels/sparse_attn.h"
#include "kernels/sparse_attn_simd.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry = describe_kernel(
    "sparse_attn",
    "C++ fused gather + online softmax + PV over blocks of 128 rows, each KV row read in place once for all "
    "heads; AVX-512 (fp32, bf16 with AVX512-BF16) or AVX2 (fp32, bf16 widened) for head dims that are "
    "multiples of 32, else portable; "
    "threads over tokens x head groups");

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

// Scratch of this thread, kept across calls (a fresh zero-filled allocation per call, page faults
// included, cost ~10 % of a decode step): slot 0 serves the full head groups, slot 1 the tail group.
template <typename A>
A* thread_scratch(int slot, int64_t size) {
  static thread_local std::vector<A> buffers[2];
  std::vector<A>& buffer = buffers[slot];
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

// The attention of one token for `heads` heads starting at q, given its gathered row pointers, in
// the scratch of thread_scratch(slot) (one TokenAttention per slot at a time). The vector kernels
// serve fp32 and bf16 when the ISA and the head dim allow, the portable kernel everything else.
template <typename T, typename A = typename v4k::Acc<T>::type>
class TokenAttention {
 public:
  TokenAttention(int64_t heads, int64_t dim, double scale, int slot) : heads_(heads), dim_(dim), scale_(scale) {
    if (path_ != v4k::Isa::baseline) {
      float* base = reinterpret_cast<float*>(thread_scratch<A>(slot, v4k::simd::Workspace::floats(heads, dim)));
      workspace_ = v4k::simd::Workspace::carve(base, heads, dim);
    } else {
      scratch_ = thread_scratch<A>(slot, 2 * heads * dim + dim + 2 * heads);
    }
  }

  // The vector kernel serving this dtype and head dim (baseline: the portable kernel). bf16 on AVX-512
  // without AVX512-BF16 takes the AVX2 kernel, which widens bf16 to fp32.
  static v4k::Isa path(int64_t dim) {
    if (!v4k::simd::supports_dim(dim)) return v4k::Isa::baseline;
    const v4k::Isa isa = v4k::isa();
    if constexpr (std::is_same_v<T, float>) return isa;
    if constexpr (std::is_same_v<T, v4k::bf16>) {
      if (v4k::has_avx512_bf16()) return v4k::Isa::avx512;
      return isa >= v4k::Isa::avx2 ? v4k::Isa::avx2 : v4k::Isa::baseline;
    }
    return v4k::Isa::baseline;
  }

  void operator()(const T* q, const T* const* rows, int64_t n_rows, const A* sink, T* out, A* lse) {
    const int64_t H = heads_, D = dim_;
    const auto s = static_cast<float>(scale_);
    if constexpr (std::is_same_v<T, float>) {
      if (path_ == v4k::Isa::avx512)
        return v4k::avx512::attend_f32(q, rows, n_rows, sink, H, D, s, out, lse, workspace_);
      if (path_ == v4k::Isa::avx2) return v4k::avx2::attend_f32(q, rows, n_rows, sink, H, D, s, out, lse, workspace_);
    }
    if constexpr (std::is_same_v<T, v4k::bf16>) {
      const auto* q16 = reinterpret_cast<const uint16_t*>(q);
      const auto* rows16 = reinterpret_cast<const uint16_t* const*>(rows);
      auto* out16 = reinterpret_cast<uint16_t*>(out);
      if (path_ == v4k::Isa::avx512)
        return v4k::avx512::attend_bf16(q16, rows16, n_rows, sink, H, D, s, out16, lse, workspace_);
      if (path_ == v4k::Isa::avx2)
        return v4k::avx2::attend_bf16(q16, rows16, n_rows, sink, H, D, s, out16, lse, workspace_);
    }
    A* acc = scratch_;
    v4k::attend_rows<T, A>(q, rows, n_rows, sink, H, D, static_cast<A>(scale_), out, lse, acc, acc + H * D,
                           acc + 2 * H * D, acc + 2 * H * D + D, acc + 2 * H * D + D + H);
  }

 private:
  int64_t heads_, dim_;
  double scale_;
  v4k::Isa path_ = path(dim_);
  A* scratch_ = nullptr;  // the portable kernel's
  v4k::simd::Workspace workspace_{};
};

// Heads per work item: all of them, unless there are more threads than tokens (decode), then the
// heads are split in groups (multiples of 4, the vector tile) so that every thread has work.
int64_t heads_per_item(int64_t tokens, int64_t heads) {
  const int64_t threads = at::get_num_threads();
  if (threads <= tokens || heads < 8) return heads;
  const int64_t groups = std::min((threads + tokens - 1) / tokens, heads / 4);
  return (heads / groups + 3) / 4 * 4;
}

template <typename T, typename A = typename v4k::Acc<T>::type>
void run(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& idx, const std::optional<at::Tensor>& sink,
         double scale, const std::optional<at::Tensor>& extra_kv, const std::optional<at::Tensor>& extra_idx,
         const std::optional<at::Tensor>& length, const std::optional<at::Tensor>& extra_length, at::Tensor& out,
         at::Tensor& lse) {
  const int64_t T_ = q.size(0), H = q.size(1), D = q.size(2);
  if (T_ == 0 || H == 0) return;  // nothing to compute (and no head groups to form)
  v4k::KvScope<T> scopes[2] = {scope<T>(kv, idx, length), {}};
  int n_scopes = 1;
  if (extra_kv) scopes[n_scopes++] = scope<T>(*extra_kv, *extra_idx, extra_length);
  const int64_t max_rows = idx.size(1) + (extra_idx ? extra_idx->size(1) : 0);
  const A* sink_ptr = sink ? sink->data_ptr<A>() : nullptr;
  const T* q_ptr = reinterpret_cast<const T*>(q.data_ptr());
  T* out_ptr = reinterpret_cast<T*>(out.data_ptr());
  A* lse_ptr = lse.data_ptr<A>();
  const int64_t group = heads_per_item(T_, H), groups = (H + group - 1) / group;
  std::atomic<int> bad_scope{-1};
  at::parallel_for(0, T_ * groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<const T*> rows(max_rows);
    std::optional<TokenAttention<T, A>> full, tail;  // the last group may have fewer heads
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / groups, h0 = item % groups * group, heads = std::min(group, H - h0);
      const int64_t n_rows = v4k::gather_rows(t, scopes, n_scopes, D, rows.data());
      if (n_rows < 0) {
        bad_scope = static_cast<int>(-1 - n_rows);
        continue;
      }
      auto& attention = heads == group ? full : tail;
      if (!attention) attention.emplace(heads, D, scale, heads == group ? 0 : 1);
      (*attention)(q_ptr + (t * H + h0) * D, rows.data(), n_rows, sink_ptr ? sink_ptr + h0 : nullptr,
                   out_ptr + (t * H + h0) * D, lse_ptr + t * H + h0);
    }
  });
  const int scope_index = bad_scope.load();
  TORCH_CHECK_VALUE(scope_index < 0, "sparse_attn: '", scope_index == 0 ? "idx" : "extra_idx",
                    "' values must be in [-1, ", scopes[scope_index < 0 ? 0 : scope_index].n, ")");
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
  auto out = empty_output(qc.sizes(), qc.options());  // a prefill's output is large: huge pages
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
