// ATen adapter of the Engram table lookup: argument checks like the reference, dtype dispatch, threads
// over gathered rows. The table is read in place through its data pointer (a memory-mapped table stays
// mapped); a non-contiguous table, scale or rows tensor is made contiguous first (a copy).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/engram.h"
#include "cpu/fresh_output.h"
#include "cpu/registry.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry = describe_kernel(
    "engram_lookup", "C++ row gather with prefetch 16 rows ahead, FP8 e4m3 x UE8M0/fp32 dequantisation fused");

constexpr int64_t kRowsPerTask = 64;

void check_rows_in_range(const at::Tensor& rows, int64_t R) {
  const int64_t* row = rows.data_ptr<int64_t>();
  if (v4k::engram_first_bad_row(row, 0, rows.numel(), R) < 0) return;
  const int64_t lo = *std::min_element(row, row + rows.numel()), hi = *std::max_element(row, row + rows.numel());
  const int64_t bad = lo < -1 ? lo : hi;
  if (R > 0) TORCH_CHECK_VALUE(false, "engram_lookup: 'rows' values must be in [-1, ", R, "), found ", bad);
  TORCH_CHECK_VALUE(false, "engram_lookup: 'rows' values must be -1 (the pool is empty), found ", bad);
}

at::Tensor engram_lookup(const at::Tensor& table, const at::Tensor& rows, const std::optional<at::Tensor>& scale,
                         std::optional<at::ScalarType> out_dtype) {
  const char* op = "engram_lookup";
  check_rank(op, "table", table, 2);
  TORCH_CHECK_VALUE(rows.scalar_type() == at::kLong || rows.scalar_type() == at::kInt, op,
                    ": 'rows' must be int64 or int32, got ", dtype_name(rows.scalar_type()));
  TORCH_CHECK_VALUE(rows.dim() >= 1, op, ": 'rows' must be at least 1-D ([..., n_cols]), got a 0-D tensor");
  const auto out_type = engram::check_table(op, table, scale, out_dtype);
  const int64_t R = table.size(0), E = table.size(1);
  const auto flat = rows.reshape(-1).to(at::kLong).contiguous();
  check_rows_in_range(flat, R);
  entry.calls.fetch_add(1, std::memory_order_relaxed);

  auto shape = rows.sizes().vec();
  shape.back() *= E;
  auto out = empty_output(shape, table.options().dtype(out_type));
  const int64_t* row = flat.data_ptr<int64_t>();
  engram::with_row_source(table.contiguous(), scale ? scale->contiguous() : at::Tensor(), out,
                          [&](const auto& source, auto* dst) {
    at::parallel_for(0, flat.numel(), kRowsPerTask, [&](int64_t begin, int64_t end) {
      auto rows_of_thread = source;
      v4k::engram_gather(rows_of_thread, E, row, begin, end, dst);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("engram_lookup", &engram_lookup); }

}  // namespace v4_ascend::cpu
