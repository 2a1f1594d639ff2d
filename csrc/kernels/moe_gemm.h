// Torch-free few-row GEMMs of the MoE FFN kernel for decode, where a selected expert sees a handful of
// rows: plain dot products over the weight rows, with quantised weights dequantised one row at a time.
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

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

// y [R, N] = a [R, K] @ w [N, K].T for a few rows and a small float w of storage type T: dot products
// accumulated in fp32 (fp64 for double) and rounded once to T, as an fp32 GEMM whose output is cast.
template <typename T, typename A = typename Acc<T>::type>
void small_gemm(const T* a, int64_t R, const T* w, int64_t N, int64_t K, T* y) {
  if constexpr (std::is_same_v<T, A>) {
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t r = 0; r < R; ++r) y[r * N + n] = dot(a + r * K, w + n * K, K);
    }
  } else {
    std::vector<A> arow(R * K), wrow(K);
    for (int64_t i = 0; i < R * K; ++i) arow[i] = widen<A>(a[i]);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < K; ++k) wrow[k] = widen<A>(w[n * K + k]);
      for (int64_t r = 0; r < R; ++r) y[r * N + n] = store<T>(dot(arow.data() + r * K, wrow.data(), K));
    }
  }
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
