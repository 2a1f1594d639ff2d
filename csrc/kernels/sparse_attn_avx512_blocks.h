// Building blocks of the AVX-512 sparse attention kernels. Include this only AFTER its includes and a
// `#pragma GCC target(...)` enabling AVX-512 (F, BW, VL, DQ) and FMA: everything here has internal
// linkage, so each translation unit compiles its own copy for its own ISA.
//
// A dtype policy V provides: T (element type), kStep (columns per product), dot(acc, a, b) (acc +=
// lane-wise products of kStep columns), store_probs(ws, at, p0, p1) (keeps 32 softmax weights as
// slots [at, at + 32) of probs for the PV product and returns what to add to the running sum),
// accumulate(ws, block, valid, heads, dim) (acc += P x rows for the block) and
// store_out(out, acc, factor, dim).
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/exp_avx512.h"
#include "kernels/softmax_sink.h"
#include "kernels/sparse_attn_avx512.h"

namespace v4k::avx512 {
namespace {

constexpr int kTile = 4;   // logits tile: 4 heads x 4 rows = 16 dot products reduced together
constexpr int kHeads = 4;  // PV tile: 4 heads x kVecs vectors of 16 output columns
constexpr int kVecs = 6;
const float kNegInf = -std::numeric_limits<float>::infinity();

inline int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

// Pairwise folds: each halves the lanes of two streams and packs both into one vector.
inline __m512 fold256(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
}
inline __m512 fold128(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
}
inline __m512 fold64(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x44), _mm512_shuffle_ps(a, b, 0xEE));
}
inline __m512 fold32(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x88), _mm512_shuffle_ps(a, b, 0xDD));
}

// Lane i of the result is the sum of the 16 lanes of v[i] (45 shuffles/adds instead of 16 reductions).
inline __m512 sum16(const __m512* v) {
  __m512 e[4];
  for (int k = 0; k < 4; ++k) e[k] = fold128(fold256(v[k], v[4 + k]), fold256(v[8 + k], v[12 + k]));
  return fold32(fold64(e[0], e[1]), fold64(e[2], e[3]));
}

// logits [heads, rows] = scale * q [heads, D] x block [rows, D]^T for the first `valid` rows rounded up
// to the 4-row tile (pads are zero rows), in tiles of 4 heads x 4 rows (a head tail repeats the last
// head and drops those lanes).
template <typename V>
void block_logits(const typename V::T* q, const typename V::T* const* block, int64_t valid, int64_t heads,
                  int64_t dim, float scale, float* logits) {
  using T = typename V::T;
  alignas(64) float lanes[kTile * kTile];
  for (int64_t b0 = 0; b0 < valid; b0 += kTile) {
    const T* r[kTile] = {block[b0], block[b0 + 1], block[b0 + 2], block[b0 + 3]};
    for (int64_t h0 = 0; h0 < heads; h0 += kTile) {
      const T* qh[kTile];
      for (int i = 0; i < kTile; ++i) qh[i] = q + smaller(h0 + i, heads - 1) * dim;
      __m512 acc[kTile * kTile];
      for (auto& a : acc) a = _mm512_setzero_ps();
      for (int64_t d = 0; d < dim; d += V::kStep)
        for (int i = 0; i < kTile; ++i)
          for (int j = 0; j < kTile; ++j) acc[i * kTile + j] = V::dot(acc[i * kTile + j], qh[i] + d, r[j] + d);
      _mm512_store_ps(lanes, _mm512_mul_ps(sum16(acc), _mm512_set1_ps(scale)));
      for (int i = 0; i < kTile && h0 + i < heads; ++i)
        std::memcpy(logits + (h0 + i) * kBlock + b0, lanes + i * kTile, kTile * sizeof(float));
    }
  }
}

// Online-softmax update with the first `valid` rows of the block real: where a head's running maximum
// grows, its sum and accumulator are rescaled; then its weights exp(logit - peak) go to V::store_probs.
template <typename V>
void block_softmax(const Workspace& ws, int64_t heads, int64_t dim, int64_t valid) {
  const auto lanes = [](int64_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1);
  };
  constexpr int kVectors = kBlock / 16;
  __mmask16 mask[kVectors];
  for (int k = 0; k < kVectors; ++k) mask[k] = lanes(valid - 16 * k);
  const __m512 neg_inf = _mm512_set1_ps(kNegInf);
  for (int64_t h = 0; h < heads; ++h) {
    const float* s = ws.logits + h * kBlock;
    __m512 logit[kVectors];
    __m512 top = neg_inf;
    for (int k = 0; k < kVectors; ++k) {
      logit[k] = _mm512_mask_loadu_ps(neg_inf, mask[k], s + 16 * k);
      top = _mm512_max_ps(top, logit[k]);
    }
    const float block_peak = _mm512_reduce_max_ps(top);
    if (block_peak > ws.peak[h]) {
      const float shrink = std::exp(ws.peak[h] - block_peak);
      ws.total[h] *= shrink;
      float* a = ws.acc + h * dim;
      for (int64_t c = 0; c < dim; c += 16)
        _mm512_storeu_ps(a + c, _mm512_mul_ps(_mm512_loadu_ps(a + c), _mm512_set1_ps(shrink)));
      ws.peak[h] = block_peak;
    }
    const __m512 peak = _mm512_set1_ps(ws.peak[h] == kNegInf ? 0.0f : ws.peak[h]);  // all -inf: weights 0
    __m512 kept = _mm512_setzero_ps();
    for (int k = 0; k < kVectors; k += 2) {
      const __m512 p0 = exp16(_mm512_sub_ps(logit[k], peak)), p1 = exp16(_mm512_sub_ps(logit[k + 1], peak));
      kept = _mm512_add_ps(kept, V::store_probs(ws, h * kBlock + 16 * k, p0, p1));
    }
    ws.total[h] += _mm512_reduce_add_ps(kept);
  }
}

// Runs Tile<TH, VECS>::run(h, c0, args...) over all heads and column vectors (16 columns each); head
// tails use single-head tiles, column tails (dim is a multiple of 32) tiles of 2 vectors.
template <template <int, int> class Tile, typename... Args>
void over_tiles(int64_t heads, int64_t dim, Args... args) {
  const int64_t vecs = dim / 16;
  for (int64_t v = 0; v < vecs;) {
    const bool full = v + kVecs <= vecs;
    const int64_t c0 = 16 * v;
    int64_t h = 0;
    for (; h + kHeads <= heads; h += kHeads)
      full ? Tile<kHeads, kVecs>::run(h, c0, args...) : Tile<kHeads, 2>::run(h, c0, args...);
    for (; h < heads; ++h) full ? Tile<1, kVecs>::run(h, c0, args...) : Tile<1, 2>::run(h, c0, args...);
    v += full ? kVecs : 2;
  }
}

// One query token over n_rows rows, blocks of kBlock (the last one padded with the zero row).
template <typename V>
void attend(const typename V::T* q, const typename V::T* const* rows, int64_t n_rows, const float* sink,
            int64_t heads, int64_t dim, float scale, typename V::T* out, float* lse, const Workspace& ws) {
  using T = typename V::T;
  for (int64_t h = 0; h < heads; ++h) ws.peak[h] = kNegInf, ws.total[h] = 0;
  std::memset(ws.acc, 0, sizeof(float) * heads * dim);
  const T* block[kBlock];
  for (int64_t r0 = 0; r0 < n_rows; r0 += kBlock) {
    const int64_t valid = smaller(kBlock, n_rows - r0);
    for (int64_t b = 0; b < kBlock; ++b) block[b] = b < valid ? rows[r0 + b] : static_cast<const T*>(ws.zero_row);
    block_logits<V>(q, block, valid, heads, dim, scale, ws.logits);
    block_softmax<V>(ws, heads, dim, valid);
    V::accumulate(ws, block, valid, heads, dim);
  }
  for (int64_t h = 0; h < heads; ++h) {
    const float factor = sink_softmax_factor<float>(ws.peak[h], ws.total[h], sink ? sink + h : nullptr, lse + h);
    V::store_out(out + h * dim, ws.acc + h * dim, _mm512_set1_ps(factor), dim);
  }
}

}  // namespace
}  // namespace v4k::avx512
