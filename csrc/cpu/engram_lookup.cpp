// ATen adapter of the Engram table lookup: argument checks like the reference, dtype dispatch, threads
// over gathered rows. The table is read in place through its data pointer (a memory-mapped table stays
// mapped); a non-contiguous table, scale or rows tensor is made contiguous first (a copy).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/checks.h"
#include "cpu/registry.h"
#include "kernels/engram_lookup.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry = describe_kernel(
    "engram_lookup", "C++ row gather with prefetch 16 rows ahead, FP8 e4m3 x UE8M0/fp32 dequantisation fused");

constexpr int64_t kRowsPerTask = 64;

// Calls fn with a value of the C++ element type of a float dtype.
template <typename Fn>
void with_float_type(at::ScalarType t, Fn&& fn) {
  switch (t) {
    case at::kDouble: fn(double{}); break;
    case at::kFloat: fn(float{}); break;
    case at::kBFloat16: fn(v4k::bf16{}); break;
    default: fn(_Float16{}); break;
  }
}

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
  const bool fp8 = table.scalar_type() == at::kFloat8_e4m3fn;
  TORCH_CHECK_VALUE(fp8 || is_float(table.scalar_type()), op,
                    ": 'table' must be float32 or bfloat16 or float16 or float64 or float8_e4m3fn, got ",
                    dtype_name(table.scalar_type()));
  const int64_t R = table.size(0), E = table.size(1);
  TORCH_CHECK_VALUE(rows.scalar_type() == at::kLong || rows.scalar_type() == at::kInt, op,
                    ": 'rows' must be int64 or int32, got ", dtype_name(rows.scalar_type()));
  TORCH_CHECK_VALUE(rows.dim() >= 1, op, ": 'rows' must be at least 1-D ([..., n_cols]), got a 0-D tensor");
  if (fp8) {
    TORCH_CHECK_VALUE(E % v4k::kFp8Block == 0, op, ": 'table' must be [R, E] with E a multiple of ", v4k::kFp8Block,
                      " for an fp8 table, got ", table.sizes());
    TORCH_CHECK_VALUE(scale.has_value(), op,
                      ": 'scale' must be a [R, E/32] UE8M0 (uint8 / float8_e8m0fnu) or fp32 tensor for an fp8 "
                      "table, got None");
    const auto st = scale->scalar_type();
    TORCH_CHECK_VALUE(st == at::kByte || st == at::kFloat8_e8m0fnu || st == at::kFloat, op,
                      ": 'scale' must be uint8 or float8_e8m0fnu or float32, got ", dtype_name(st));
    check_shape(op, "scale", *scale, {R, E / v4k::kFp8Block});
  } else {
    TORCH_CHECK_VALUE(!scale.has_value(), op, ": 'scale' must be None for a ", dtype_name(table.scalar_type()),
                      " table (scales are for fp8 tables), got a tensor");
  }
  TORCH_CHECK_VALUE(!out_dtype || is_float(*out_dtype), op,
                    ": 'out_dtype' must be None or a float dtype (bf16, fp16, fp32, fp64), got ",
                    dtype_name(*out_dtype));
  const auto out_type = out_dtype.value_or(fp8 ? at::kBFloat16 : table.scalar_type());
  const auto flat = rows.reshape(-1).to(at::kLong).contiguous();
  check_rows_in_range(flat, R);
  entry.calls.fetch_add(1, std::memory_order_relaxed);

  auto shape = rows.sizes().vec();
  shape.back() *= E;
  auto out = at::empty(shape, table.options().dtype(out_type));
  const int64_t n = flat.numel();
  const int64_t* row = flat.data_ptr<int64_t>();
  const auto tab = table.contiguous();
  if (fp8) {
    const auto sc = scale->contiguous();
    v4k::Fp8Scales scales;
    if (sc.scalar_type() == at::kFloat)
      scales.fp32 = sc.data_ptr<float>();
    else
      scales.ue8m0 = static_cast<const uint8_t*>(sc.data_ptr());
    const auto* q = static_cast<const uint8_t*>(tab.data_ptr());
    with_float_type(out_type, [&](auto out_tag) {
      using Out = decltype(out_tag);
      auto* dst = static_cast<Out*>(out.data_ptr());
      at::parallel_for(0, n, kRowsPerTask, [&](int64_t begin, int64_t end) {
        v4k::engram_gather_fp8<Out>(q, scales, E, row, begin, end, dst);
      });
    });
    return out;
  }
  with_float_type(table.scalar_type(), [&](auto in_tag) {
    using In = decltype(in_tag);
    const auto* src = static_cast<const In*>(tab.data_ptr());
    with_float_type(out_type, [&](auto out_tag) {
      using Out = decltype(out_tag);
      auto* dst = static_cast<Out*>(out.data_ptr());
      at::parallel_for(0, n, kRowsPerTask, [&](int64_t begin, int64_t end) {
        v4k::engram_gather<In, Out>(src, E, row, begin, end, dst);
      });
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("engram_lookup", &engram_lookup); }

}  // namespace v4_ascend::cpu
