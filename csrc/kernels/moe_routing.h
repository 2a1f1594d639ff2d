// Torch-free dispatch of the MoE FFN kernel (its routing is the moe_route kernel's, kernels/moe_route.h):
// a stable counting sort of the (token, slot) pairs by expert.
#pragma once
#include <cstdint>

namespace v4k::moe {

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
