// Torch-free routing and dispatch of the MoE FFN kernel: V4's biased top-k (or hash) expert choice on
// sqrt-softplus scores, the normalised routing weights, and a stable counting sort of the (token, slot)
// pairs by expert.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace v4k::moe {

// True when selection score a (expert ia) ranks before b (expert ib): larger first, NaN largest (as a
// descending torch.sort), equal scores by lower expert index.
template <typename S>
inline bool ranks_before(S a, int64_t ia, S b, int64_t ib) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na || nb) return na && (!nb || ia < ib);
  return a > b || (a == b && ia < ib);
}

// idx[t, :k] = the k experts of largest scores[t] + bias (bias may be null; it only selects), in rank
// order. The sum is formed in the common type of the score and bias, as torch promotes it.
template <typename A, typename B>
void select_topk(const A* scores, const B* bias, int64_t T, int64_t E, int64_t k, int32_t* idx) {
  using S = std::common_type_t<A, B>;
  for (int64_t t = 0; t < T; ++t) {
    const A* row = scores + t * E;
    int32_t* out = idx + t * k;
    auto key = [&](int64_t e) { return static_cast<S>(row[e]) + (bias ? static_cast<S>(bias[e]) : S(0)); };
    int64_t filled = 0;
    for (int64_t e = 0; e < E; ++e) {  // insertion into the sorted top-k list
      const S s = key(e);
      if (filled == k && !ranks_before(s, e, key(out[k - 1]), out[k - 1])) continue;
      int64_t pos = filled < k ? filled++ : k - 1;
      while (pos > 0 && ranks_before(s, e, key(out[pos - 1]), out[pos - 1])) {
        out[pos] = out[pos - 1];
        --pos;
      }
      out[pos] = static_cast<int32_t>(e);
    }
  }
}

// weights[t, j] = scores[t, idx[t, j]] / sum_j scores[t, idx[t, j]] * route_scale (no epsilon, as V4).
template <typename A>
void routing_weights(const A* scores, const int32_t* idx, int64_t T, int64_t E, int64_t k, A route_scale,
                     A* weights) {
  for (int64_t t = 0; t < T; ++t) {
    const A* row = scores + t * E;
    A total = 0;
    for (int64_t j = 0; j < k; ++j) total += row[idx[t * k + j]];
    for (int64_t j = 0; j < k; ++j) weights[t * k + j] = row[idx[t * k + j]] / total * route_scale;
  }
}

// Stable counting sort of the M = T*k slots of idx (values in [0, E)) by expert: rows
// starts[e]..starts[e+1] of the dispatched layout belong to expert e and slot[r] = t*k + j of row r, in
// increasing slot order within an expert. starts has E + 1 entries.
inline void dispatch_by_expert(const int32_t* idx, int64_t M, int64_t E, int64_t* starts, int32_t* slot) {
  for (int64_t e = 0; e <= E; ++e) starts[e] = 0;
  for (int64_t s = 0; s < M; ++s) ++starts[idx[s] + 1];
  for (int64_t e = 0; e < E; ++e) starts[e + 1] += starts[e];
  // Fill from each expert's start, then shift the starts back by one expert.
  for (int64_t s = 0; s < M; ++s) slot[starts[idx[s]]++] = static_cast<int32_t>(s);
  for (int64_t e = E; e > 0; --e) starts[e] = starts[e - 1];
  starts[0] = 0;
}

}  // namespace v4k::moe
