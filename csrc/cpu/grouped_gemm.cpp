// Grouped GEMMs on the CPU. Groups of few rows (decode; at most small_rows(dtype)) go through the
// torch-free small-M kernel (csrc/kernels/small_m_gemm.h), which streams each weight once, split over
// (group, block of weight rows) work items so that all threads share the weight stream; empty groups
// cost nothing.
// Larger groups get one ATen mm (MKL/oneDNN) written straight into the output slice, so there is no
// padding and no copy of x or w. Non-contiguous x or w are made contiguous first.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu/checks.h"
#include "cpu/core_types.h"
#include "cpu/fresh_output.h"
#include "cpu/registry.h"
#include "kernels/small_m_gemm.h"

namespace v4_ascend::cpu {
namespace {

// Most rows of a group for the small-M kernel, measured on this project's AMD EPYC (one thread, ratios in
// one process; benchmarks/README.md): fp32 ATen mm (MKL, far below the FMA peak here) is slower than the
// small-M kernel up to 256 rows (1.4-2x on 32 groups x 4-64 rows, K 2048; equal to slightly faster at
// 128-256 rows, K 4096); bf16 mm (oneDNN, AVX512-BF16) catches up at about 12 rows. fp64 / fp16 keep
// the bf16 bound.
int64_t small_rows(at::ScalarType dtype) { return dtype == at::kFloat ? 256 : 8; }

// Weight rows per work item: 64 rows of K 2048 are 512 KB of fp32, enough to amortise the item.
constexpr int64_t kColsPerItem = 64;

KernelEntry& contiguous_entry = describe_kernel(
    "grouped_gemm",
    "C++: groups of <= 256 (fp32) / 8 rows in the small-M kernel (weights streamed once, AVX-512 / AVX512-BF16, "
    "threads over (group, weight-row block)); larger groups one ATen mm_out each into output slices");
KernelEntry& masked_entry = describe_kernel(
    "grouped_gemm_masked",
    "C++: groups of <= 256 (fp32) / 8 rows (counts) in the small-M kernel (weights streamed once, AVX-512 / "
    "AVX512-BF16, threads over (group, weight-row block)); larger groups one ATen mm_out each");

void check_operands(const char* op, const at::Tensor& x, const at::Tensor& w, int64_t x_rank) {
  check_rank(op, "x", x, x_rank);
  check_float(op, "x", x);
  check_rank(op, "w", w, 3);
  check_dtype(op, "w", w, x.scalar_type());
  TORCH_CHECK_VALUE(w.size(2) == x.size(-1), op, ": 'w' must be [G, N, ", x.size(-1), "], got ", w.sizes());
}

// Rows [row, row + rows) of the 2-D views x and y against weight matrix `group` of w.
struct Slice {
  int64_t group, row, rows;
};

// y2[s.row + i] = x2[s.row + i] @ w[s.group].T for every slice: small slices in the small-M kernel on all
// threads, then the others as one ATen mm each (itself multithreaded). x2 [R, K], w [G, N, K], y2 [R, N],
// all contiguous.
void run_slices(const std::vector<Slice>& slices, const at::Tensor& x2, const at::Tensor& w, at::Tensor& y2) {
  const int64_t N = w.size(1), K = w.size(2);
  const int64_t most = small_rows(x2.scalar_type());
  std::vector<Slice> small;
  for (const Slice& s : slices) {
    if (s.rows > most) {
      auto out = y2.narrow(0, s.row, s.rows);
      at::mm_out(out, x2.narrow(0, s.row, s.rows), w[s.group].t());
    } else if (s.rows > 0) {
      small.push_back(s);
    }
  }
  const int64_t blocks = (N + kColsPerItem - 1) / kColsPerItem;
  const int64_t items = static_cast<int64_t>(small.size()) * blocks;
  with_core_type(x2.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* x = static_cast<const T*>(x2.data_ptr());
    const T* wp = static_cast<const T*>(w.data_ptr());
    T* y = static_cast<T*>(y2.data_ptr());
    at::parallel_for(0, items, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const Slice& s = small[i / blocks];
        const int64_t n0 = (i % blocks) * kColsPerItem, n = std::min(kColsPerItem, N - n0);
        v4k::gemm::small_m_gemm<T>(
            {x + s.row * K, K, s.rows, wp + (s.group * N + n0) * K, n, K, y + s.row * N + n0, N});
      }
    });
  });
}

at::Tensor grouped_gemm(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& offsets) {
  const char* op = "grouped_gemm";
  check_operands(op, x_in, w_in, 2);
  check_rank(op, "offsets", offsets, 1);
  check_dtype(op, "offsets", offsets, at::kInt);
  const int64_t G = w_in.size(0), M = x_in.size(0);
  TORCH_CHECK_VALUE(offsets.size(0) == G, op, ": 'offsets' must have ", G, " entries, got ", offsets.size(0));
  const auto ends = offsets.contiguous();
  const int32_t* end = ends.data_ptr<int32_t>();
  std::vector<Slice> slices;
  int64_t start = 0;
  for (int64_t g = 0; g < G; ++g) {
    TORCH_CHECK_VALUE(end[g] >= start && end[g] <= M, op,
                      ": 'offsets' must be non-decreasing cumulative row ends <= ", M, ", got offsets[", g,
                      "] = ", end[g], " after ", start);
    slices.push_back({g, start, end[g] - start});
    start = end[g];
  }
  contiguous_entry.calls.fetch_add(1, std::memory_order_relaxed);
  auto y = empty_output({M, w_in.size(1)}, x_in.options());
  y.narrow(0, start, M - start).zero_();  // rows after the last group
  run_slices(slices, x_in.contiguous(), w_in.contiguous(), y);
  return y;
}

at::Tensor grouped_gemm_masked(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& counts) {
  const char* op = "grouped_gemm_masked";
  check_operands(op, x_in, w_in, 3);
  check_rank(op, "counts", counts, 1);
  check_dtype(op, "counts", counts, at::kInt);
  const int64_t G = x_in.size(0), Mmax = x_in.size(1);
  TORCH_CHECK_VALUE(w_in.size(0) == G && counts.size(0) == G, op, ": 'w' and 'counts' must have ", G, " groups");
  const auto rows = counts.contiguous();
  const int32_t* count = rows.data_ptr<int32_t>();
  std::vector<Slice> slices;
  for (int64_t g = 0; g < G; ++g) {
    TORCH_CHECK_VALUE(count[g] >= 0 && count[g] <= Mmax, op, ": 'counts' values must be in [0, ", Mmax, "], got ",
                      count[g]);
    slices.push_back({g, g * Mmax, count[g]});
  }
  masked_entry.calls.fetch_add(1, std::memory_order_relaxed);
  // Zeros for the rows past counts[g]; the groups' own rows are overwritten.
  auto y = at::zeros({G, Mmax, w_in.size(1)}, x_in.options());
  auto y2 = y.view({G * Mmax, w_in.size(1)});
  run_slices(slices, x_in.contiguous().view({G * Mmax, x_in.size(2)}), w_in.contiguous(), y2);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) {
  m.impl("grouped_gemm", &grouped_gemm);
  m.impl("grouped_gemm_masked", &grouped_gemm_masked);
}

}  // namespace v4_ascend::cpu
