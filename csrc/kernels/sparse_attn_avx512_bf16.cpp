// bf16 AVX-512 sparse attention (needs AVX512-BF16): vdpbf16ps on bf16 pairs with fp32 accumulation,
// for the logits (pairs of columns of q and of each row) and for PV (pairs of rows, weights rounded
// to bf16 as a bf16 GEMM would).
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/softmax_sink.h"
#include "kernels/sparse_attn_avx512.h"

// Every header is included above, so the target below applies to this file's own functions only.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")
#include "kernels/bf16_pairs_avx512_blocks.h"
#include "kernels/sparse_attn_avx512_blocks.h"

namespace v4k::avx512 {
namespace {

// Interleaves rows 2j and 2j + 1 column by column (the operand layout of vdpbf16ps) into pairs
// [n_pairs, 2 * dim].
void interleave_pairs(const uint16_t* const* block, int64_t n_pairs, int64_t dim, uint16_t* pairs) {
  const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
  const __m512i second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
  for (int64_t j = 0; j < n_pairs; ++j) {
    uint16_t* out = pairs + j * 2 * dim;
    for (int64_t c = 0; c < dim; c += 32) {
      const __m512i a = _mm512_loadu_si512(block[2 * j] + c), b = _mm512_loadu_si512(block[2 * j + 1] + c);
      const __m512i lo = _mm512_unpacklo_epi16(a, b), hi = _mm512_unpackhi_epi16(a, b);
      _mm512_storeu_si512(out + 2 * c, _mm512_permutex2var_epi64(lo, first, hi));
      _mm512_storeu_si512(out + 2 * c + 32, _mm512_permutex2var_epi64(lo, second, hi));
    }
  }
}

// acc [TH heads, VECS * 16 columns from c0] += probs [TH, 2 * n_pairs] x rows of the pairs.
template <int TH, int VECS>
struct PvTile {
  static void run(int64_t h, int64_t c0, const Workspace* ws, int64_t n_pairs, int64_t dim) {
    float* acc = ws->acc + h * dim + c0;
    const uint16_t* probs = reinterpret_cast<const uint16_t*>(ws->probs) + h * kBlock;
    __m512 a[TH][VECS];
    for (int i = 0; i < TH; ++i)
      for (int j = 0; j < VECS; ++j) a[i][j] = _mm512_loadu_ps(acc + i * dim + 16 * j);
    dot_pairs<TH, VECS>(a, probs, kBlock, ws->pairs + 2 * c0, 2 * dim, n_pairs);
    for (int i = 0; i < TH; ++i)
      for (int j = 0; j < VECS; ++j) _mm512_storeu_ps(acc + i * dim + 16 * j, a[i][j]);
  }
};

struct BF16 {
  using T = uint16_t;
  static constexpr int kStep = 32;
  static __m512 dot(__m512 acc, const uint16_t* a, const uint16_t* b) {
    return _mm512_dpbf16_ps(acc, as_bf16(_mm512_loadu_si512(a)), as_bf16(_mm512_loadu_si512(b)));
  }
  // Keeps the weights rounded to bf16 for the PV product; the running sum (hence lse) adds the
  // unrounded ones, so that lse stays as accurate as in fp32.
  static __m512 store_probs(const Workspace& ws, int64_t at, __m512 p0, __m512 p1) {
    _mm512_storeu_si512(reinterpret_cast<uint16_t*>(ws.probs) + at, (__m512i)_mm512_cvtne2ps_pbh(p1, p0));
    return _mm512_add_ps(p0, p1);
  }
  static void accumulate(const Workspace& ws, const uint16_t* const* block, int64_t valid, int64_t heads,
                         int64_t dim) {
    const int64_t n_pairs = (valid + 1) / 2;  // an odd last row pairs with the zero row (weight 0)
    interleave_pairs(block, n_pairs, dim, ws.pairs);
    over_tiles<PvTile>(heads, dim, &ws, n_pairs, dim);
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

void attend_bf16(const uint16_t* q, const uint16_t* const* rows, int64_t n_rows, const float* sink, int64_t heads,
                 int64_t dim, float scale, uint16_t* out, float* lse, const Workspace& ws) {
  attend<BF16>(q, rows, n_rows, sink, heads, dim, scale, out, lse, ws);
}

}  // namespace v4k::avx512
