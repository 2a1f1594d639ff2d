// ATen adapter of the fused Engram hash + lookup: the checks of engram_hash and engram_lookup under the
// fused op's name, then one pass per token (v4k::engram_hash_lookup_sequence), threads over tokens.
// Small int64 inputs are made contiguous; a non-contiguous table or scale is made contiguous (a copy of
// the table: pass a contiguous, e.g. memory-mapped, table); the table is otherwise read in place.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>

#include "cpu/engram.h"
#include "cpu/fresh_output.h"
#include "cpu/registry.h"
#include "kernels/engram_hash_lookup.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry = describe_kernel(
    "engram_hash_lookup", "C++ one pass per token: hash (reciprocal modulo), prefetch 16 rows ahead, "
    "gather + FP8 e4m3 x UE8M0/fp32 dequantisation");

// Tokens per task: a V4.1 token gathers 24 rows (12 KiB of bf16), so 16 tokens amortise a task's start.
constexpr int64_t kTokensPerTask = 16;

// The error of a hashed row outside [-1, R), reporting the value the reference reports (its min or max).
[[noreturn]] void fail_row_range(const char* op, const engram::HashInputs& in, const v4k::EngramHashLayout& layout,
                                 int64_t R) {
  auto rows = at::empty({in.batch, in.shape.S, in.columns()}, in.ids.options());
  for (int64_t b = 0; b < in.batch; ++b)
    v4k::engram_hash_sequence(in.ids.data_ptr<int64_t>() + b * in.shape.S, in.history_of(b), layout.pad_id,
                              layout.multipliers, layout.moduli, layout.offsets, in.shape, 0, in.shape.S,
                              rows.data_ptr<int64_t>() + b * in.shape.S * in.columns());
  const int64_t lo = rows.min().item<int64_t>(), hi = rows.max().item<int64_t>();
  TORCH_CHECK_VALUE(false, op, ": 'offsets' must be placing every hashed row in [-1, R) with R = ", R,
                    " table rows, got a row ", lo < -1 ? lo : hi);
}

at::Tensor engram_hash_lookup(const at::Tensor& ids, const at::Tensor& multipliers, const at::Tensor& moduli,
                              const at::Tensor& offsets, int64_t pad_id, const at::Tensor& table,
                              const std::optional<at::Tensor>& history, const std::optional<at::Tensor>& scale,
                              std::optional<at::ScalarType> out_dtype) {
  const char* op = "engram_hash_lookup";
  engram::check_hash_shapes(op, ids, multipliers, moduli, offsets, pad_id, history);
  const auto out_type = engram::check_table(op, table, scale, out_dtype);
  const auto in = engram::hash_inputs(op, ids, multipliers, moduli, offsets, history);
  const int64_t R = table.size(0), E = table.size(1), S = in.shape.S, columns = in.columns();
  const auto reciprocals = v4k::floor_moduli(in.moduli.data_ptr<int64_t>(), in.moduli.numel());
  const v4k::EngramHashLayout layout{in.multipliers.data_ptr<int64_t>(), reciprocals.data(),
                                     in.offsets.data_ptr<int64_t>(), in.shape, pad_id};

  auto out = empty_output({in.batch, S, columns * E}, table.options().dtype(out_type));
  std::atomic<bool> out_of_range{false};
  const int64_t* id = in.ids.data_ptr<int64_t>();
  engram::with_row_source(table.contiguous(), scale ? scale->contiguous() : at::Tensor(), out,
                          [&](const auto& source, auto* dst) {
    at::parallel_for(0, in.batch * S, kTokensPerTask, [&](int64_t begin, int64_t end) {
      auto rows_of_thread = source;
      for (int64_t b = begin / std::max<int64_t>(S, 1); b * S < end; ++b) {
        const int64_t p0 = std::max(begin - b * S, int64_t(0)), p1 = std::min(end - b * S, S);
        if (!v4k::engram_hash_lookup_sequence(id + b * S, in.history_of(b), layout, rows_of_thread, R, E, p0, p1,
                                              dst + b * S * columns * E))
          out_of_range.store(true, std::memory_order_relaxed);
      }
    });
  });
  if (out_of_range.load()) fail_row_range(op, in, layout, R);
  entry.calls.fetch_add(1, std::memory_order_relaxed);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("engram_hash_lookup", &engram_hash_lookup); }

}  // namespace v4_ascend::cpu
