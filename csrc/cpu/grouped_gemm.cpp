// Grouped GEMMs on the CPU: one ATen mm (MKL/oneDNN) per group written straight into the output
// slice, so there is no padding and no copy of x or w.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/checks.h"
#include "cpu/registry.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& contiguous_entry =
    describe_kernel("grouped_gemm", "C++ per-group ATen mm_out into output slices (no padding, no copies)");
KernelEntry& masked_entry =
    describe_kernel("grouped_gemm_masked", "C++ per-group ATen mm_out over the first counts[g] rows");

void check_operands(const char* op, const at::Tensor& x, const at::Tensor& w, int64_t x_rank) {
  check_rank(op, "x", x, x_rank);
  check_rank(op, "w", w, 3);
  check_dtype(op, "w", w, x.scalar_type());
  TORCH_CHECK_VALUE(w.size(2) == x.size(-1), op, ": 'w' must be [G, N, ", x.size(-1), "], got ", w.sizes());
}

at::Tensor grouped_gemm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& offsets) {
  const char* op = "grouped_gemm";
  check_operands(op, x, w, 2);
  check_rank(op, "offsets", offsets, 1);
  check_dtype(op, "offsets", offsets, at::kInt);
  const int64_t G = w.size(0), M = x.size(0);
  TORCH_CHECK_VALUE(offsets.size(0) == G, op, ": 'offsets' must have ", G, " entries, got ", offsets.size(0));
  contiguous_entry.calls.fetch_add(1, std::memory_order_relaxed);
  auto y = at::zeros({M, w.size(1)}, x.options());
  const auto ends = offsets.contiguous();
  const int32_t* end = ends.data_ptr<int32_t>();
  int64_t start = 0;
  for (int64_t g = 0; g < G; ++g) {
    TORCH_CHECK_VALUE(end[g] >= start && end[g] <= M, op,
                      ": 'offsets' must be non-decreasing cumulative row ends <= ", M, ", got offsets[", g,
                      "] = ", end[g], " after ", start);
    if (end[g] > start) {
      auto rows = y.narrow(0, start, end[g] - start);
      at::mm_out(rows, x.narrow(0, start, end[g] - start), w[g].t());
    }
    start = end[g];
  }
  return y;
}

at::Tensor grouped_gemm_masked(const at::Tensor& x, const at::Tensor& w, const at::Tensor& counts) {
  const char* op = "grouped_gemm_masked";
  check_operands(op, x, w, 3);
  check_rank(op, "counts", counts, 1);
  check_dtype(op, "counts", counts, at::kInt);
  const int64_t G = x.size(0), Mmax = x.size(1);
  TORCH_CHECK_VALUE(w.size(0) == G && counts.size(0) == G, op, ": 'w' and 'counts' must have ", G, " groups");
  masked_entry.calls.fetch_add(1, std::memory_order_relaxed);
  auto y = at::zeros({G, Mmax, w.size(1)}, x.options());
  const auto rows = counts.contiguous();
  const int32_t* count = rows.data_ptr<int32_t>();
  for (int64_t g = 0; g < G; ++g) {
    TORCH_CHECK_VALUE(count[g] >= 0 && count[g] <= Mmax, op, ": 'counts' values must be in [0, ", Mmax, "], got ",
                      count[g]);
    if (count[g] > 0) {
      auto rows = y[g].narrow(0, 0, count[g]);
      at::mm_out(rows, x[g].narrow(0, 0, count[g]), w[g].t());
    }
  }
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) {
  m.impl("grouped_gemm", &grouped_gemm);
  m.impl("grouped_gemm_masked", &grouped_gemm_masked);
}

}  // namespace v4_ascend::cpu
