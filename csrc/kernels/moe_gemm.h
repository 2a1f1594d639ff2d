// Torch-free few-row GEMMs of the MoE FFN kernel for decode, where a selected expert sees a handful of
// rows, on quantised weights dequantised one row at a time (float weights use kernels/small_m_gemm.h).
#pragma once
#include <cstdint>

#include "kernels/dtypes.h"
#include "kernels/moe_quant.h"

namespace v4k::moe {

// a . b over K, with eight independent partial sums that the compiler can keep in vector registers.
template <typename A>
inline A dot(const A* a, const A* b, int64_t K) {
  A lane[8] = {};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    for (int j = 0; j < 8; ++j) lane[j] += a[k + j] * b[k + j];
  }
  for (; k < K; ++k) lane[0] += a[k] * b[k];
  return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

// Rows of a few-row product y[r, n] = a[r, :] . W[n, :] with W dequantised one row at a time, so that a
// decode step reads each selected quantised expert once and never writes it out whole. `dequant_row(n,
// wrow)` fills the K values of row n; rows [n0, n1) of W are computed, y is [R, ldy].
template <typename A, typename RowFn>
void dequant_gemm_rows(const A* a, int64_t R, int64_t K, int64_t n0, int64_t n1, RowFn&& dequant_row, A* wrow,
                       A* y, int64_t ldy) {
  for (int64_t n = n0; n < n1; ++n) {
    dequant_row(n, wrow);
    for (int64_t r = 0; r < R; ++r) y[r * ldy + n] = dot(a + r * K, wrow, K);
  }
}

}  // namespace v4k::moe
