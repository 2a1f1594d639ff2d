// AVX512-BF16 scoring tile of the lightning indexer (indexer_topk.h): the q . k products on bf16 pairs with
// fp32 accumulation (vdpbf16ps), in register tiles of 8 (then 4) heads x 32 keys; ReLU, weights and the sum
// over heads in fp32, heads in order.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/indexer_topk.h"

// Every header is included above, so the target below applies to this file's own functions only.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")
#include "kernels/bf16_pairs_avx512_blocks.h"

namespace v4k::avx512 {
namespace {

static_assert(kIndexerKeys == 32, "a key tile is two vectors of 16 keys");

// score += sum over heads i < TH of w[i] * relu(q_i . k_j) for the 32 keys j of the tile.
template <int TH>
void add_heads(const uint16_t* q, const float* w, int64_t pairs, const uint16_t* kt, __m512 (&score)[2]) {
  __m512 dots[TH][2];
  for (auto& row : dots) row[0] = row[1] = _mm512_setzero_ps();
  dot_pairs<TH, 2>(dots, q, {2 * pairs, 2}, kt, {32, 2 * kIndexerKeys}, pairs);
  for (int i = 0; i < TH; ++i) {
    const __m512 weight = _mm512_set1_ps(w[i]);
    for (int j = 0; j < 2; ++j)  // max(0, x) keeps a NaN dot product NaN, as the reference's relu does
      score[j] = _mm512_fmadd_ps(weight, _mm512_max_ps(_mm512_setzero_ps(), dots[i][j]), score[j]);
  }
}

}  // namespace

void indexer_score_tile_bf16(const uint16_t* q, const float* w, int64_t Hp, int64_t pairs, const uint16_t* kt,
                             float* score) {
  __m512 sums[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  int64_t h = 0;
  for (; h + 8 <= Hp; h += 8) add_heads<8>(q + h * 2 * pairs, w + h, pairs, kt, sums);
  for (; h < Hp; h += kIndexerHeads) add_heads<kIndexerHeads>(q + h * 2 * pairs, w + h, pairs, kt, sums);
  _mm512_storeu_ps(score, sums[0]);
  _mm512_storeu_ps(score + 16, sums[1]);
}

}  // namespace v4k::avx512
