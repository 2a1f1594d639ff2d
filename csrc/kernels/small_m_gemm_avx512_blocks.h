// Register tiles of the AVX-512 small-M GEMM (see small_m_gemm.h). Include this only AFTER its includes
// and a `#pragma GCC target(...)` enabling AVX-512 (F, BW, VL) and FMA: everything here has internal
// linkage, so each translation unit compiles its own copy for its own ISA.
//
// A dtype policy V provides: T (element type), Vec (operand register), kStep (columns per product),
// load(p) and load_tail(p, n) (kStep columns, or the first n < kStep with zeros after them), and
// madd(acc, a, b) (acc + products of a and b, summed into 16 fp32 lanes).
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "kernels/dtypes.h"
#include "kernels/small_m_gemm.h"

namespace v4k::gemm::avx512 {
namespace {

// Sum of the 16 lanes. Only masked shuffles with a source operand: the unmasked ones (and
// _mm512_reduce_add_ps) expand to GCC 12's self-initialised _mm512_undefined_ps, which -Werror rejects.
inline float lane_sum(__m512 v) {
  constexpr __mmask16 all = 0xffff;
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, _MM_SHUFFLE(2, 3, 0, 1)));
  v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, all, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, all, v, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_cvtss_f32(v);
}

// y tile [R, C] at (m, n); `Prefetch`: also pull the next tile's weight rows into L2 (done by the first row
// tile only: the others find the rows in cache and would spend load slots on it).
template <typename V, int R, int C, bool Prefetch>
inline void tile(const SmallM<typename V::T>& p, int64_t m, int64_t n) {
  using T = typename V::T;
  const T* x = p.x + m * p.ldx;
  const T* w = p.w + n * p.K;
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + V::kStep <= p.K; k += V::kStep) {
    typename V::Vec wv[C];
    for (int c = 0; c < C; ++c) {
      // One line per row and step: the next tile's rows then start warm instead of waiting for the
      // hardware prefetcher to pick up C new streams (the address may lie past the end of w:
      // prefetches never fault).
      if constexpr (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(w + (C + c) * p.K + k), _MM_HINT_T1);
      wv[c] = V::load(w + c * p.K + k);
    }
    for (int r = 0; r < R; ++r) {
      const typename V::Vec xv = V::load(x + r * p.ldx + k);
      for (int c = 0; c < C; ++c) acc[r][c] = V::madd(acc[r][c], xv, wv[c]);
    }
  }
  if (k < p.K) {
    const int64_t rest = p.K - k;
    typename V::Vec wv[C];
    for (int c = 0; c < C; ++c) wv[c] = V::load_tail(w + c * p.K + k, rest);
    for (int r = 0; r < R; ++r) {
      const typename V::Vec xv = V::load_tail(x + r * p.ldx + k, rest);
      for (int c = 0; c < C; ++c) acc[r][c] = V::madd(acc[r][c], xv, wv[c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) p.y[(m + r) * p.ldy + n + c] = from_float<T>(lane_sum(acc[r][c]));
}

template <typename V, int C>
inline void row_tiles(const SmallM<typename V::T>& p, int64_t n) {
  int64_t m = 0;
  if (p.M >= kTileRows) {
    tile<V, kTileRows, C, true>(p, 0, n);
    for (m = kTileRows; m + kTileRows <= p.M; m += kTileRows) tile<V, kTileRows, C, false>(p, m, n);
  }
  const bool first = m == 0;
  switch (p.M - m) {
    case 3: return first ? tile<V, 3, C, true>(p, m, n) : tile<V, 3, C, false>(p, m, n);
    case 2: return first ? tile<V, 2, C, true>(p, m, n) : tile<V, 2, C, false>(p, m, n);
    case 1: return first ? tile<V, 1, C, true>(p, m, n) : tile<V, 1, C, false>(p, m, n);
    default: return;
  }
}

template <typename V>
void run(const SmallM<typename V::T>& p) {
  int64_t n = 0;
  for (; n + kTileCols <= p.N; n += kTileCols) row_tiles<V, kTileCols>(p, n);
  for (; n < p.N; ++n) row_tiles<V, 1>(p, n);
}

}  // namespace
}  // namespace v4k::gemm::avx512
