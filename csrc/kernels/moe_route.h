// Torch-free V4 router selection (the scores s = sqrt(softplus(logits)) are given): per token, the top-k
// experts by s + bias, or the hash layer's row tid2eid[token_id], and the weights s[idx] / sum(s[idx]) * scale.
// The selection keeps the k best in a sorted array while scanning the E candidates once (a candidate that
// does not beat the current k-th is rejected with one comparison); ties go to the lower expert and NaN
// ranks first, as the reference's stable descending torch.sort.
#pragma once
#include <cstdint>

#include "kernels/topk.h"

namespace v4k {

// One token. A: score type; S: selection type (the promotion of the scores and the bias). `best` holds k.
// Writes the routing weights to `picked`.
template <typename A, typename S>
void moe_route_token(const A* scores, const S* bias, int64_t E, int64_t k, const int64_t* hashed,
                     double route_scale, A* picked, int32_t* idx, Candidate<S>* best) {
  if (hashed) {
    for (int64_t j = 0; j < k; ++j) idx[j] = static_cast<int32_t>(hashed[j]);
  } else {
    int64_t count = 0;
    for (int64_t e = 0; e < E; ++e) {
      const Candidate<S> c{bias ? static_cast<S>(scores[e]) + bias[e] : static_cast<S>(scores[e]),
                           static_cast<int32_t>(e)};
      if (count == k && !ranks_before(c, best[k - 1])) continue;
      int64_t slot = count < k ? count++ : k - 1;
      for (; slot > 0 && ranks_before(c, best[slot - 1]); --slot) best[slot] = best[slot - 1];
      best[slot] = c;
    }
    for (int64_t j = 0; j < k; ++j) idx[j] = best[j].index;
  }
  // Weights: the picked unbiased scores over their sum, times route_scale (the sum in double: one
  // rounding; the reference sums in A: the two differ by a few ulps at most).
  double sum = 0;
  for (int64_t j = 0; j < k; ++j) sum += static_cast<double>(picked[j] = scores[idx[j]]);
  const A total = static_cast<A>(sum), scale = static_cast<A>(route_scale);
  for (int64_t j = 0; j < k; ++j) picked[j] = picked[j] / total * scale;
}

// Index of the first value of x[0, n) outside [0, upper), or -1.
inline int64_t first_out_of_range(const int64_t* x, int64_t n, int64_t upper) {
  for (int64_t i = 0; i < n; ++i)
    if (x[i] < 0 || x[i] >= upper) return i;
  return -1;
}

}  // namespace v4k
