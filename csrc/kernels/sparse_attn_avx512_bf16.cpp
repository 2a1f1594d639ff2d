// bf16 AVX-512 sparse attention (needs AVX512-BF16): vdpbf16ps on bf16 pairs with fp32 accumulation,
// for the logits (pairs of columns of q and of each row) and for PV (pairs of rows, weights rounded
// to bf16 as a bf16 GEMM would).
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/exp_avx512.h"
#include "kernels/softmax_sink.h"
#include "kernels/sparse_attn_simd.h"

// Every header is included above, so the target below applies to this file's own functions only.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,avx512bf16")
#define V4K_SIMD_AVX512
#include "kernels/bf16_pairs_avx512_blocks.h"
#include "kernels/sparse_attn_simd_blocks.h"

namespace v4k::simd {
namespace {

using avx512::as_bf16;

// Interleaves rows 2j and 2j + 1 column by column (the operand layout of vdpbf16ps) into pairs
// [dim / 16, kPairStride, 32]: a PV tile then streams contiguous memory (a [pairs, 2 * dim] layout
// strides by 2 * dim, which maps its rows to a few cache sets).
void interleave_pairs(const uint16_t* const* block, int64_t n_pairs, int64_t dim, uint16_t* pairs) {
  const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
  const __m512i second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
  for (int64_t j = 0; j < n_pairs; ++j) {
    uint16_t* out = pairs + j * 32;
    for (int64_t c = 0; c < dim; c += 32) {
      const __m512i a = _mm512_loadu_si512(block[2 * j] + c), b = _mm512_loadu_si512(block[2 * j + 1] + c);
      const __m512i lo = _mm512_unpacklo_epi16(a, b), hi = _mm512_unpackhi_epi16(a, b);
      _mm512_storeu_si512(out + c / 16 * kPairStride * 32, _mm512_permutex2var_epi64(lo, first, hi));
      _mm512_storeu_si512(out + (c / 16 + 1) * kPairStride * 32, _mm512_permutex2var_epi64(lo, second, hi));
    }
  }
}

// acc [TH heads, VECS * 16 columns from c0] += probs [2 * n_pairs, TH] x rows of the pairs.
template <int TH, int VECS>
struct PvTile {
  static void run(int64_t h, int64_t c0, const Workspace* ws, int64_t n_pairs, int64_t dim) {
    float* acc = ws->acc + h * dim + c0;
    const uint32_t* probs = reinterpret_cast<const uint32_t*>(ws->probs) + h;
    __m512 a[TH][VECS];
    for (int i = 0; i < TH; ++i)
      for (int j = 0; j < VECS; ++j) a[i][j] = _mm512_loadu_ps(acc + i * dim + 16 * j);
    // head i's weights of rows 2b and 2b + 1 at probs[b * hp + i]; vector j of pair b of the rows at
    // pairs[((c0 / 16 + j) * kPairStride + b) * 32]
    avx512::dot_pairs<TH, VECS>(a, reinterpret_cast<const uint16_t*>(probs), {2, 2 * ws->hp},
                        ws->pairs + c0 / 16 * kPairStride * 32, {kPairStride * 32, 32}, n_pairs);
    for (int i = 0; i < TH; ++i)
      for (int j = 0; j < VECS; ++j) _mm512_storeu_ps(acc + i * dim + 16 * j, a[i][j]);
  }
};

// Two bf16 values of one head or one row as the 32-bit operand unit of vdpbf16ps.
inline uint32_t pair_at(const uint16_t* p) {
  uint32_t pair;
  std::memcpy(&pair, p, sizeof pair);
  return pair;
}

struct PairedBf16 {
  using W = Avx512;
  using T = uint16_t;
  using Q = uint32_t;
  using Op = __m512bh;
  static constexpr int kStep = 2;

  static void transpose_q(const uint16_t* q, int64_t heads, int64_t dim, int64_t hp, uint32_t* qt) {
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t s = 0; s < dim / 2; ++s) qt[s * hp + h] = pair_at(q + h * dim + 2 * s);
  }
  static __m512bh load_q(const uint32_t* qt) { return as_bf16(_mm512_loadu_si512(qt)); }
  static __m512bh broadcast(const uint16_t* row, int64_t step) {
    return as_bf16(_mm512_set1_epi32(static_cast<int>(pair_at(row + 2 * step))));
  }
  static __m512 dot(__m512 acc, __m512bh a, __m512bh b) { return _mm512_dpbf16_ps(acc, a, b); }
  // Keeps the weights of rows `row` and `row + 1` rounded to bf16, as one pair per head, for the PV
  // product; the running sum (hence lse) adds the unrounded ones, so that lse stays as accurate as in fp32.
  static void store_probs(const Workspace& ws, int64_t row, int64_t h0, __m512 p0, __m512 p1) {
    const __m512i even = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(p0));
    const __m512i odd = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(p1));
    uint32_t* pairs = reinterpret_cast<uint32_t*>(ws.probs) + row / 2 * ws.hp + h0;
    _mm512_storeu_si512(pairs, _mm512_or_si512(even, _mm512_slli_epi32(odd, 16)));
  }
  static void accumulate(const Workspace& ws, const uint16_t* const* block, int64_t valid, int64_t heads,
                         int64_t dim) {
    const int64_t n_pairs = (valid + 1) / 2;  // an odd last row pairs with the zero row (weight 0)
    interleave_pairs(block, n_pairs, dim, ws.pairs);
    over_tiles<W, PvTile>(heads, dim, &ws, n_pairs, dim);
  }
  static void store_out(uint16_t* out, const float* acc, __m512 factor, int64_t dim) {
    for (int64_t c = 0; c < dim; c += 32) {
      const __m512 a = _mm512_mul_ps(_mm512_loadu_ps(acc + c), factor);
      const __m512 b = _mm512_mul_ps(_mm512_loadu_ps(acc + c + 16), factor);
      _mm512_storeu_si512(out + c, (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
  }
};

}  // namespace
}  // namespace v4k::simd

namespace v4k::avx512 {

void attend_bf16(const uint16_t* q, const uint16_t* const* rows, int64_t n_rows, const float* sink, int64_t heads,
                 int64_t dim, float scale, uint16_t* out, float* lse, const simd::Workspace& ws) {
  simd::attend<simd::PairedBf16>(q, rows, n_rows, sink, heads, dim, scale, out, lse, ws);
}

}  // namespace v4k::avx512
