// ATen adapter of the Engram n-gram hash: argument checks like the reference, threads over positions.
// Non-contiguous inputs are made contiguous here (they are small int64 tensors).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/engram.h"
#include "cpu/registry.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry = describe_kernel(
    "engram_hash",
    "C++ fused multiply-XOR hash of all orders and heads per position (int64 wrap-around, reciprocal modulo)");

at::Tensor engram_hash(const at::Tensor& ids, const at::Tensor& multipliers, const at::Tensor& moduli,
                       const at::Tensor& offsets, int64_t pad_id, const std::optional<at::Tensor>& history) {
  const char* op = "engram_hash";
  engram::check_hash_shapes(op, ids, multipliers, moduli, offsets, pad_id, history);
  const auto in = engram::hash_inputs(op, ids, multipliers, moduli, offsets, history);
  entry.calls.fetch_add(1, std::memory_order_relaxed);

  const int64_t S = in.shape.S, columns = in.columns();
  auto out = at::empty({in.batch, S, columns}, ids.options());
  const auto reciprocals = v4k::floor_moduli(in.moduli.data_ptr<int64_t>(), in.moduli.numel());
  const int64_t* id = in.ids.data_ptr<int64_t>();
  int64_t* dst = out.data_ptr<int64_t>();
  at::parallel_for(0, in.batch * S, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin / std::max<int64_t>(S, 1); b * S < end; ++b) {
      const int64_t p0 = std::max(begin - b * S, int64_t(0)), p1 = std::min(end - b * S, S);
      v4k::engram_hash_sequence(id + b * S, in.history_of(b), pad_id, in.multipliers.data_ptr<int64_t>(),
                                reciprocals.data(), in.offsets.data_ptr<int64_t>(), in.shape, p0, p1,
                                dst + b * S * columns);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("engram_hash", &engram_hash); }

}  // namespace v4_ascend::cpu
