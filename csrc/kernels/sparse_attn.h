// Torch-free sparse attention with sink over shared K=V entries (MQA): one softmax over the
// entries gathered from up to two pools. The gather only collects row pointers: rows are read in
// place by the kernels, never copied into a gathered [T, K, D] tensor.
#pragma once
#include <cstdint>
#include <limits>

#include "kernels/dtypes.h"
#include "kernels/softmax_sink.h"

namespace v4k {

template <typename T>
struct KvScope {
  const T* kv = nullptr;          // [n, d]
  int64_t n = 0;
  const int32_t* idx = nullptr;   // [tokens, width], -1 = unused
  int64_t width = 0;
  const int32_t* length = nullptr;  // [tokens] or null: only the first length[t] slots are read
};

// Collects the valid rows of token t, scope after scope, into `rows` (room for the sum of the scope
// widths) and returns their number, or -1 - sc if scope sc holds an index outside [-1, n).
template <typename T>
int64_t gather_rows(int64_t t, const KvScope<T>* scopes, int n_scopes, int64_t dim, const T** rows) {
  int64_t n_rows = 0;
  for (int sc = 0; sc < n_scopes; ++sc) {
    const KvScope<T>& scope = scopes[sc];
    const int32_t* idx = scope.idx + t * scope.width;
    const int64_t width = scope.length ? scope.length[t] : scope.width;
    for (int64_t k = 0; k < width; ++k) {
      const int32_t j = idx[k];
      if (j == -1) continue;
      if (j < -1 || j >= scope.n) return -1 - sc;
      rows[n_rows++] = scope.kv + static_cast<int64_t>(j) * dim;
    }
  }
  return n_rows;
}

// Portable kernel for any dtype and dim (fp64 accumulates in fp64): online softmax row by row, each
// row widened once and used by every head. q [heads, dim] -> out [heads, dim], lse [heads].
// Workspaces: acc and qf of heads * dim, row of dim, peak and total of heads.
template <typename T, typename A = typename Acc<T>::type>
void attend_rows(const T* q, const T* const* rows, int64_t n_rows, const A* sink, int64_t heads, int64_t dim,
                 A scale, T* out, A* lse, A* acc, A* qf, A* row, A* peak, A* total) {
  const int64_t H = heads, D = dim;
  for (int64_t h = 0; h < H; ++h) peak[h] = -std::numeric_limits<A>::infinity(), total[h] = 0;
  for (int64_t i = 0; i < H * D; ++i) qf[i] = widen<A>(q[i]), acc[i] = 0;
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t c = 0; c < D; ++c) row[c] = widen<A>(rows[r][c]);
    for (int64_t h = 0; h < H; ++h) {
      const A* qh = qf + h * D;
      A dot = 0;
      for (int64_t c = 0; c < D; ++c) dot += qh[c] * row[c];
      const A logit = dot * scale;
      A* ah = acc + h * D;
      if (logit > peak[h]) {  // rescale the running sums to the new maximum
        const A shrink = std::exp(peak[h] - logit);
        total[h] *= shrink;
        for (int64_t c = 0; c < D; ++c) ah[c] *= shrink;
        peak[h] = logit;
      }
      const A w = std::exp(logit - peak[h]);
      total[h] += w;
      for (int64_t c = 0; c < D; ++c) ah[c] += w * row[c];
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    const A factor = sink_softmax_factor<A>(peak[h], total[h], sink ? sink + h : nullptr, lse + h);
    for (int64_t c = 0; c < D; ++c) out[h * D + c] = narrow<T, A>(acc[h * D + c] * factor);
  }
}

}  // namespace v4k
