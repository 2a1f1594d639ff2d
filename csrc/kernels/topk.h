// Ranking shared by the top-k kernels: the order of a stable descending torch.sort.
#pragma once
#include <cmath>
#include <cstdint>

namespace v4k {

template <typename A>
struct Candidate {
  A score;
  int32_t index;
};

// True when a ranks before b: higher score first, NaN above every number (as torch.sort), ties to the
// lower index.
template <typename A>
inline bool ranks_before(const Candidate<A>& a, const Candidate<A>& b) {
  if (a.score > b.score) return true;
  if (a.score < b.score) return false;
  if (a.score == b.score) return a.index < b.index;
  const bool a_nan = std::isnan(a.score), b_nan = std::isnan(b.score);  // unordered: one is NaN
  return a_nan && (!b_nan || a.index < b.index);
}

}  // namespace v4k
