// Torch-free elementwise stages of the MoE FFN kernel: V4's clamped SwiGLU with the routing weight
// applied before the down projection, and the fp32 (fp64) accumulation of expert outputs per token.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/dtypes.h"
#include "kernels/moe_quant.h"

namespace v4k::moe {

// A GEMM output element (type G: the storage type T or the accumulation type A) as the reference sees it:
// rounded to T, then widened to A.
template <typename T, typename A, typename G>
inline A as_stored(G v) {
  if constexpr (std::is_same_v<G, T>) {
    return widen<A>(v);
  } else if constexpr (std::is_same_v<T, A>) {
    return static_cast<A>(v);
  } else {
    return widen<A>(store<T>(v));
  }
}

// h = silu(min(gate, limit)) * clamp(up, -limit, limit) * weight[r] over rows x width, computed in A and
// rounded once to T. limit <= 0 disables the clamp; weight may be null.
template <typename T, typename A, typename G>
void swiglu_rows(const G* gate, const G* up, int64_t rows, int64_t width, A limit, const A* weight, T* h) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * width;
    for (int64_t i = 0; i < width; ++i) {
      A g = as_stored<T, A>(gate[base + i]), u = as_stored<T, A>(up[base + i]);
      if (limit > 0) {
        u = u < -limit ? -limit : (u > limit ? limit : u);
        g = g > limit ? limit : g;
      }
      A v = g / (A(1) + std::exp(-g)) * u;
      if (weight) v *= weight[r];
      h[base + i] = store<T>(v);
    }
  }
}

// out[r] += y[r] (each element as rounded to T) over rows x width.
template <typename T, typename A, typename G>
void accumulate_row(const G* y, int64_t width, A* out) {
  for (int64_t i = 0; i < width; ++i) out[i] += as_stored<T, A>(y[i]);
}

}  // namespace v4k::moe
