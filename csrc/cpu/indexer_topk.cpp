// ATen adapter of the lightning-indexer top-k: argument checks, dtype dispatch, threads over query chunks.
// Non-contiguous inputs are made contiguous here (a copy of q, k or the small per-query tensors).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/checks.h"
#include "cpu/registry.h"
#include "kernels/indexer_topk.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry = describe_kernel(
    "indexer_topk",
    "C++ blocked scoring (query chunk x 32-key tile; AVX-512/AVX2 fp32, bf16 pairs with AVX512-BF16) + bounded "
    "nth_element top-k, no [T, N] block");

// Queries scored together against each key tile: enough to amortise the tile's transposition, at most an
// equal share of the queries per thread (decode: one chunk per thread).
constexpr int64_t kMaxChunk = 16;

template <typename T, typename S, typename A = typename v4k::Acc<T>::type>
void run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& w, const at::Tensor& q_pos,
         const std::optional<at::Tensor>& k_offset, const v4k::IndexerShape& shape, at::Tensor& out) {
  const int64_t T_ = q.size(0);
  const v4k::IndexerInputs<T, A> in{reinterpret_cast<const T*>(q.data_ptr()), reinterpret_cast<const T*>(k.data_ptr()),
                                    w.data_ptr<A>(), q_pos.data_ptr<int32_t>(),
                                    k_offset ? k_offset->data_ptr<int32_t>() : nullptr};
  const int64_t threads = at::get_num_threads();
  const int64_t chunk = std::clamp<int64_t>((T_ + threads - 1) / threads, 1, kMaxChunk);
  const int64_t chunks = (T_ + chunk - 1) / chunk;
  int32_t* dst = out.data_ptr<int32_t>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    v4k::IndexerWorkspace<A, S> ws(shape, chunk);
    for (int64_t c = begin; c < end; ++c)
      v4k::indexer_topk_chunk<T, A, S>(in, shape, c * chunk, std::min(T_, (c + 1) * chunk), dst, ws);
  });
}

at::Tensor indexer_topk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& weights, const at::Tensor& q_pos,
                        int64_t ratio, int64_t topk, const std::optional<at::Tensor>& k_offset) {
  const char* op = "indexer_topk";
  check_rank(op, "q", q, 3);
  check_float(op, "q", q);
  const int64_t T_ = q.size(0), H = q.size(1), d = q.size(2);
  check_rank(op, "k", k, 2);
  TORCH_CHECK_VALUE(k.size(1) == d, op, ": 'k' must be [N, ", d, "] like 'q', got shape ", k.sizes());
  TORCH_CHECK_VALUE(k.scalar_type() == q.scalar_type(), op, ": 'k' must be ", dtype_name(q.scalar_type()),
                    " like 'q', got ", dtype_name(k.scalar_type()));
  check_float(op, "weights", weights);
  check_shape(op, "weights", weights, {T_, H});
  check_dtype(op, "q_pos", q_pos, at::kInt);
  check_shape(op, "q_pos", q_pos, {T_});
  TORCH_CHECK_VALUE(ratio >= 1, op, ": 'ratio' must be a positive int, got ", ratio);
  TORCH_CHECK_VALUE(topk >= 1, op, ": 'topk' must be a positive int, got ", topk);
  if (k_offset) {
    check_dtype(op, "k_offset", *k_offset, at::kInt);
    check_shape(op, "k_offset", *k_offset, {T_});
  }
  const auto pos = q_pos.contiguous();
  std::optional<at::Tensor> offset;
  if (k_offset) offset = k_offset->contiguous();
  const int64_t N = k.size(0);
  int32_t min_pos = 0;
  const int range = v4k::indexer_check_ranges(pos.data_ptr<int32_t>(), offset ? offset->data_ptr<int32_t>() : nullptr,
                                              T_, ratio, N, &min_pos);
  TORCH_CHECK_VALUE(range != 1, op, ": 'q_pos' values must be >= 0, found ", min_pos);
  TORCH_CHECK_VALUE(range != 2, op, ": 'k_offset' + visible entries (q_pos + 1) // ratio must lie in [0, ", N,
                    "] rows of 'k'");
  entry.calls.fetch_add(1, std::memory_order_relaxed);

  auto out = at::empty({T_, topk}, q.options().dtype(at::kInt));
  if (T_ == 0) return out;
  const auto acc_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto qc = q.contiguous(), kc = k.contiguous(), wc = weights.to(acc_type).contiguous();
  const v4k::IndexerShape shape{H, d, N, ratio, topk};
  switch (q.scalar_type()) {
    case at::kDouble: run<double, v4k::WideScoring<double>>(qc, kc, wc, pos, offset, shape, out); break;
    case at::kFloat: run<float, v4k::WideScoring<float>>(qc, kc, wc, pos, offset, shape, out); break;
    case at::kBFloat16:
      if (v4k::has_avx512_bf16())
        run<v4k::bf16, v4k::Bf16PairScoring>(qc, kc, wc, pos, offset, shape, out);
      else
        run<v4k::bf16, v4k::WideScoring<float>>(qc, kc, wc, pos, offset, shape, out);
      break;
    default: run<_Float16, v4k::WideScoring<float>>(qc, kc, wc, pos, offset, shape, out); break;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("indexer_topk", &indexer_topk); }

}  // namespace v4_ascend::cpu
