// Final normalisation of one head of a sink softmax, shared by the scalar and the vector kernels.
// `static` on purpose: every translation unit (each compiled for its own ISA) keeps its own copy.
#pragma once
#include <cmath>
#include <limits>

namespace v4k {

// Given the running maximum `peak` and sum `total` of exp(logit - peak) over the valid entries,
// writes the logsumexp (sink excluded; -inf when there was no entry) and returns the factor that
// turns the running weighted sum into the output: 1 / (total + exp(sink - peak)), computed without
// overflow when the sink dominates. A head without entries gets 0 (its sum is 0 as well).
template <typename A>
static inline A sink_softmax_factor(A peak, A total, const A* sink, A* lse) {
  if (!(total > 0)) {
    *lse = -std::numeric_limits<A>::infinity();
    return 0;
  }
  *lse = peak + std::log(total);
  if (!sink) return 1 / total;
  if (*sink > peak) {
    const A shrink = std::exp(peak - *sink);
    return shrink / (total * shrink + 1);
  }
  return 1 / (total + std::exp(*sink - peak));
}

}  // namespace v4k
