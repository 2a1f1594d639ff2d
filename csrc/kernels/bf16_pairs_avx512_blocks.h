// bf16 GEMM register tile on AVX512-BF16 (vdpbf16ps: products of bf16 pairs added to fp32 lanes), shared
// by the kernels that multiply bf16 operands with fp32 accumulation. Include this only AFTER its includes
// and a `#pragma GCC target(...)` enabling AVX-512 (F, BW, VL) and AVX512-BF16: everything here has
// internal linkage, so each translation unit compiles its own copy.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace v4k::avx512 {
namespace {

inline __m512bh as_bf16(__m512i x) { return (__m512bh)x; }

// Strides of a bf16 pair-operand layout, in bf16 elements.
struct PairStrides {
  int64_t outer;  // between rows of the left operand, or between 16-column vectors of the right one
  int64_t pair;   // between consecutive pairs
};

// acc[i][j] += sum over pairs p < n_pairs of a_i[2p] * b_p[2 l] + a_i[2p + 1] * b_p[2 l + 1] for the 16 columns
// l of vector j: pair p of left row i is the two bf16 at a + i * sa.outer + p * sa.pair; pair p of vector j
// of the right operand is 16 columns of two interleaved bf16 each at b + j * sb.outer + p * sb.pair.
// One broadcast pair of a per row feeds VECS products, one vector of b feeds TH.
template <int TH, int VECS>
inline void dot_pairs(__m512 (&acc)[TH][VECS], const uint16_t* a, PairStrides sa, const uint16_t* b,
                      PairStrides sb, int64_t n_pairs) {
  for (int64_t p = 0; p < n_pairs; ++p) {
    __m512bh r[VECS];
    for (int j = 0; j < VECS; ++j) r[j] = as_bf16(_mm512_loadu_si512(b + j * sb.outer + p * sb.pair));
    for (int i = 0; i < TH; ++i) {
      int32_t pair;
      std::memcpy(&pair, a + i * sa.outer + p * sa.pair, sizeof pair);
      const __m512bh left = as_bf16(_mm512_set1_epi32(pair));
      for (int j = 0; j < VECS; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], left, r[j]);
    }
  }
}

}  // namespace
}  // namespace v4k::avx512
