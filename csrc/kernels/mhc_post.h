// Torch-free mHC post-mix (v4_math.md §4): out[t, j] = post[t, j] * f[t] + sum_i comb[t, i, j] * x[t, i],
// one pass over the streams of a token instead of the reference's einsum, broadcast product, sum and cast.
// Channels are processed in tiles held in the accumulation type, so the loops vectorise for every dtype.
// The sum over i runs in order i = 0..n-1 and is added to the rounded post * f, as the reference does;
// entries agree with it to rounding (its einsum may order or fuse the products differently).
#pragma once
#include <algorithm>
#include <cstdint>

#include "kernels/dtypes.h"
#include "kernels/isa.h"

namespace v4k {

constexpr int64_t kMhcChannels = 256;  // channels per accumulator tile

// One token: f [D], x [n, D], post [n], comb [n, n] (row i, column j) -> out [n, D].
template <typename T, typename A>
V4K_INLINE void mhc_post_token_body(const T* f, const T* x, const A* post, const A* comb, int64_t n, int64_t D,
                                    T* out) {
  A acc[kMhcChannels];
  for (int64_t d0 = 0; d0 < D; d0 += kMhcChannels) {
    const int64_t w = std::min(kMhcChannels, D - d0);
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t d = 0; d < w; ++d) acc[d] = A(0);
      for (int64_t i = 0; i < n; ++i) {
        const A c = comb[i * n + j];
        const T* xi = x + i * D + d0;
        for (int64_t d = 0; d < w; ++d) acc[d] += c * widen<A>(xi[d]);
      }
      const A p = post[j];
      const T* fd = f + d0;
      T* dst = out + j * D + d0;
      for (int64_t d = 0; d < w; ++d) {
        const A scaled = p * widen<A>(fd[d]);
        dst[d] = narrow<T, A>(scaled + acc[d]);
      }
    }
  }
}

#define V4K_MHC_POST(T, A)                                                                                   \
  V4K_DISPATCH(void, mhc_post_token, (mhc_post_token_body<T, A>),                                            \
               (const T* f, const T* x, const A* post, const A* comb, int64_t n, int64_t D, T* out),         \
               (f, x, post, comb, n, D, out))
V4K_MHC_POST(float, float)
V4K_MHC_POST(double, double)
V4K_MHC_POST(bf16, float)
V4K_MHC_POST(_Float16, float)
#undef V4K_MHC_POST

}  // namespace v4k
