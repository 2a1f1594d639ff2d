// ATen adapter of the Engram n-gram hash: argument checks like the reference, threads over positions.
// Non-contiguous inputs are made contiguous here (they are small int64 tensors).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/checks.h"
#include "cpu/registry.h"
#include "kernels/engram_hash.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry = describe_kernel(
    "engram_hash", "C++ fused multiply-XOR hash of all orders and heads per position (int64 wrap-around)");

void check_int64(const char* op, const char* arg, const at::Tensor& x, int64_t rank) {
  check_rank(op, arg, x, rank);
  check_dtype(op, arg, x, at::kLong);
}

void check_min(const char* op, const char* arg, const at::Tensor& x, int64_t low, const char* what) {
  const int64_t least = v4k::min_value(x.data_ptr<int64_t>(), x.numel(), low);
  TORCH_CHECK_VALUE(least >= low, op, ": '", arg, "' must be ", what, ", got a value ", least);
}

at::Tensor engram_hash(const at::Tensor& ids, const at::Tensor& multipliers, const at::Tensor& moduli,
                       const at::Tensor& offsets, int64_t pad_id, const std::optional<at::Tensor>& history) {
  const char* op = "engram_hash";
  check_int64(op, "ids", ids, 2);
  const int64_t B = ids.size(0), S = ids.size(1);
  check_int64(op, "multipliers", multipliers, 1);
  const int64_t N = multipliers.size(0);
  TORCH_CHECK_VALUE(N >= 2, op, ": 'multipliers' must be of length max_ngram >= 2 (one per look-back), got length ",
                    N);
  check_int64(op, "moduli", moduli, 2);
  TORCH_CHECK_VALUE(moduli.size(0) == N - 1, op, ": 'moduli' must be of shape (", N - 1, ", *), got ", moduli.sizes());
  check_int64(op, "offsets", offsets, 2);
  check_shape(op, "offsets", offsets, moduli.sizes());
  TORCH_CHECK_VALUE(pad_id >= 0, op, ": 'pad_id' must be a compressed token id >= 0, got ", pad_id);
  if (history) {
    check_dtype(op, "history", *history, at::kLong);
    check_shape(op, "history", *history, {B, N - 1});
  }
  const auto idc = ids.contiguous(), mulc = multipliers.contiguous(), modc = moduli.contiguous(),
             offc = offsets.contiguous();
  const auto hist = history ? history->contiguous() : at::Tensor();
  check_min(op, "ids", idc, 0, "compressed token ids >= 0");
  check_min(op, "moduli", modc, 1, "positive bucket sizes");
  if (history) check_min(op, "history", hist, 0, "compressed token ids >= 0");
  entry.calls.fetch_add(1, std::memory_order_relaxed);

  const v4k::EngramHashShape shape{S, N, moduli.size(1)};
  const int64_t columns = (N - 1) * shape.heads;
  auto out = at::empty({B, S, columns}, ids.options());
  const int64_t* id = idc.data_ptr<int64_t>();
  const int64_t* past = history ? hist.data_ptr<int64_t>() : nullptr;
  int64_t* dst = out.data_ptr<int64_t>();
  at::parallel_for(0, B * S, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin / std::max<int64_t>(S, 1); b * S < end; ++b) {
      const int64_t p0 = std::max(begin - b * S, int64_t(0)), p1 = std::min(end - b * S, S);
      v4k::engram_hash_sequence(id + b * S, past ? past + b * (N - 1) : nullptr, pad_id, mulc.data_ptr<int64_t>(),
                                modc.data_ptr<int64_t>(), offc.data_ptr<int64_t>(), shape, p0, p1,
                                dst + b * S * columns);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("engram_hash", &engram_hash); }

}  // namespace v4_ascend::cpu
