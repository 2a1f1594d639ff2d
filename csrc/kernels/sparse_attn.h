// Torch-free sparse attention with sink over shared K=V entries (MQA): one softmax over the
// entries gathered from up to two pools. Each gathered row is loaded once and used by every head.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/dtypes.h"

namespace v4k {

template <typename T>
struct KvScope {
  const T* kv = nullptr;          // [n, d]
  int64_t n = 0;
  const int32_t* idx = nullptr;   // [tokens, width], -1 = unused
  int64_t width = 0;
  const int32_t* length = nullptr;  // [tokens] or null: only the first length[t] slots are read
};

struct SparseAttnShape {
  int64_t heads, dim;
  double scale;
};

// Returns false (and leaves out/lse unspecified) if an index is outside [-1, n).
// Workspaces: acc and qf of heads * dim, row of dim, peak and total of heads, all of type A.
// Writes out [heads, dim] and lse [heads] for token t.
template <typename T, typename A = typename Acc<T>::type>
bool sparse_attn_token(int64_t t, const T* q, const KvScope<T>* scopes, int n_scopes, const A* sink,
                       const SparseAttnShape& s, T* out, A* lse, A* acc, A* qf, A* row, A* peak, A* total) {
  const int64_t H = s.heads, D = s.dim;
  const A neg_inf = -std::numeric_limits<A>::infinity();
  for (int64_t h = 0; h < H; ++h) peak[h] = neg_inf, total[h] = 0;
  for (int64_t i = 0; i < H * D; ++i) {
    qf[i] = widen<A>(q[i]) * static_cast<A>(s.scale);
    acc[i] = 0;
  }
  for (int sc = 0; sc < n_scopes; ++sc) {
    const KvScope<T>& scope = scopes[sc];
    const int32_t* idx = scope.idx + t * scope.width;
    const int64_t width = scope.length ? scope.length[t] : scope.width;
    for (int64_t k = 0; k < width; ++k) {
      const int32_t j = idx[k];
      if (j == -1) continue;
      if (j < -1 || j >= scope.n) return false;
      const T* src = scope.kv + static_cast<int64_t>(j) * D;
      for (int64_t c = 0; c < D; ++c) row[c] = widen<A>(src[c]);
      for (int64_t h = 0; h < H; ++h) {
        const A* qh = qf + h * D;
        A logit = 0;
        for (int64_t c = 0; c < D; ++c) logit += qh[c] * row[c];
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
  }
  for (int64_t h = 0; h < H; ++h) {
    const bool any = total[h] > 0;
    lse[h] = any ? peak[h] + std::log(total[h]) : neg_inf;
    A denom = total[h];
    if (sink) denom += std::exp(sink[h] - (any ? peak[h] : sink[h]));  // acc is 0 when !any: out = 0
    const A inv = denom > 0 ? 1 / denom : 0;
    for (int64_t c = 0; c < D; ++c) out[h * D + c] = narrow<T, A>(acc[h * D + c] * inv);
  }
  return true;
}

}  // namespace v4k
