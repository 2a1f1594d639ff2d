// Torch-free lightning-indexer top-k (v4_math.md §3.5):
//   score[t, i] = sum_h w[t, h] * relu(q[t, h] . k[base_t + i]),  0 <= i < visible_t = (q_pos[t] + 1) / ratio,
// returning the min(topk, visible_t) best rows of k per query by descending score, ties to the lower row,
// then -1 padding.
//
// Memory is bounded whatever the pool size: a chunk of queries is scored against one transposed tile of
// kIndexerKeys keys at a time (the tile is reused by every head of every query of the chunk, which is what
// makes the scoring compute-bound), and each query keeps only a buffer of 2 * topk candidates (pruned with
// nth_element), so there is no [T, N] score block and no full sort.
//
// Ranking follows the reference's stable descending torch.sort: NaN ranks above every number, equal scores
// go to the lower row. (A visible entry whose score is -inf is ranked as the lowest number; the reference
// can instead list a masked column before it, which needs infinite inputs or weights to happen.)
// Heads are summed in order h = 0..H-1 per key; in fp32 this can round differently from the reference's
// grouped reduction, so exact comparisons need scores that are exactly representable (integer inputs).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/dtypes.h"
#include "kernels/isa.h"
#include "kernels/topk.h"

namespace v4k {

constexpr int64_t kIndexerKeys = 32;  // keys per transposed tile
constexpr int64_t kIndexerHeads = 4;  // heads per register tile (q rows are padded to a multiple)

struct IndexerShape {
  int64_t H, d, N, ratio, topk;
};

template <typename T, typename A>
struct IndexerInputs {
  const T* q;                // [T, H, d]
  const T* k;                // [N, d]
  const A* w;                // [T, H] in the accumulation type
  const int32_t* q_pos;      // [T]
  const int32_t* k_offset;   // [T] or nullptr (= 0)
};

inline int64_t indexer_visible(int32_t pos, int64_t ratio) { return (static_cast<int64_t>(pos) + 1) / ratio; }

// Checks the data-dependent ranges like the reference, in its order. Returns 0 when all is in range,
// 1 when a q_pos is negative (*min_pos receives the smallest), 2 when a window leaves [0, N].
inline int indexer_check_ranges(const int32_t* q_pos, const int32_t* k_offset, int64_t T, int64_t ratio, int64_t N,
                                int32_t* min_pos) {
  if (T == 0) return 0;
  *min_pos = *std::min_element(q_pos, q_pos + T);
  if (*min_pos < 0) return 1;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t base = k_offset ? k_offset[t] : 0;
    if (base < 0 || base + indexer_visible(q_pos[t], ratio) > N) return 2;
  }
  return 0;
}

// score[j] = sum_h w[h] * relu(q[h] . kt[:, j]) over one tile; q is [Hp, d], Hp a multiple of kIndexerHeads,
// kt is [d, kIndexerKeys]. The head loop is sequential so the sum order is fixed for every ISA.
template <typename A>
V4K_INLINE void indexer_score_tile_body(const A* q, const A* w, int64_t Hp, int64_t d,
                                        const A* kt, A* score) {
  for (int64_t j = 0; j < kIndexerKeys; ++j) score[j] = A(0);
  for (int64_t h = 0; h < Hp; h += kIndexerHeads) {
    A dots[kIndexerHeads][kIndexerKeys] = {};
    const A* qh = q + h * d;
    for (int64_t c = 0; c < d; ++c) {
      const A* krow = kt + c * kIndexerKeys;
      for (int64_t r = 0; r < kIndexerHeads; ++r) {
        const A qv = qh[r * d + c];
        for (int64_t j = 0; j < kIndexerKeys; ++j) dots[r][j] += qv * krow[j];
      }
    }
    for (int64_t r = 0; r < kIndexerHeads; ++r)
      for (int64_t j = 0; j < kIndexerKeys; ++j) score[j] += w[h + r] * (dots[r][j] < A(0) ? A(0) : dots[r][j]);
  }
}

V4K_DISPATCH(void, indexer_score_tile, indexer_score_tile_body,
             (const float* q, const float* w, int64_t Hp, int64_t d, const float* kt, float* score),
             (q, w, Hp, d, kt, score))
V4K_DISPATCH(void, indexer_score_tile, indexer_score_tile_body,
             (const double* q, const double* w, int64_t Hp, int64_t d, const double* kt, double* score),
             (q, w, Hp, d, kt, score))

// The best `cap` candidates seen so far, in a buffer of 2 * cap: when it fills, nth_element keeps the best
// cap and their worst becomes the bar a new candidate must beat. Amortised O(1) per candidate, no full sort.
template <typename A>
struct IndexerBest {
  Candidate<A>* buf;
  int64_t cap, size = 0;
  bool barred = false;
  Candidate<A> bar{};

  void offer(const Candidate<A>& c) {
    if (barred && !ranks_before(c, bar)) return;
    buf[size++] = c;
    if (size == 2 * cap) keep_best(), barred = true, bar = buf[cap - 1];
  }
  void keep_best() {
    std::nth_element(buf, buf + cap - 1, buf + size, ranks_before<A>);
    size = cap;
  }
  // Writes the rows best first, then -1 up to `width`.
  void write(int32_t* dst, int64_t width) {
    if (size > cap) keep_best();
    std::sort(buf, buf + size, ranks_before<A>);
    for (int64_t slot = 0; slot < width; ++slot) dst[slot] = slot < size ? buf[slot].index : -1;
  }
};

// Per-thread buffers of indexer_topk_chunk, sized once for `queries` queries per chunk.
template <typename A>
struct IndexerWorkspace {
  std::vector<A> q, w, kt, score;
  std::vector<Candidate<A>> candidates;
  std::vector<IndexerBest<A>> best;
  std::vector<int64_t> base, visible;

  IndexerWorkspace(const IndexerShape& s, int64_t queries) {
    const int64_t Hp = padded_heads(s.H);
    q.assign(queries * Hp * s.d, A(0));
    w.assign(queries * Hp, A(0));
    kt.assign(s.d * kIndexerKeys, A(0));
    score.assign(kIndexerKeys, A(0));
    candidates.resize(queries * 2 * kept(s));
    best.resize(queries);
    base.resize(queries);
    visible.resize(queries);
  }
  // Candidates a query keeps: topk, never more than the pool holds (visible <= N), so a huge topk costs
  // no memory here.
  static int64_t kept(const IndexerShape& s) { return std::min(s.topk, s.N); }
  static int64_t padded_heads(int64_t H) { return (H + kIndexerHeads - 1) / kIndexerHeads * kIndexerHeads; }
};

// Top-k rows of queries [t0, t1) into out [T, topk]; ranges must have passed indexer_check_ranges.
template <typename T, typename A>
void indexer_topk_chunk(const IndexerInputs<T, A>& in, const IndexerShape& s, int64_t t0, int64_t t1, int32_t* out,
                        IndexerWorkspace<A>& ws) {
  const int64_t H = s.H, d = s.d, Hp = IndexerWorkspace<A>::padded_heads(H), n = t1 - t0;
  int64_t lo = s.N, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = t0 + i;
    ws.base[i] = in.k_offset ? in.k_offset[t] : 0;
    ws.visible[i] = indexer_visible(in.q_pos[t], s.ratio);
    ws.best[i] = {ws.candidates.data() + i * 2 * IndexerWorkspace<A>::kept(s), std::min(s.topk, ws.visible[i])};
    if (ws.visible[i] > 0) lo = std::min(lo, ws.base[i]), hi = std::max(hi, ws.base[i] + ws.visible[i]);
    A* qi = ws.q.data() + i * Hp * d;
    const T* src = in.q + t * H * d;
    for (int64_t e = 0; e < H * d; ++e) qi[e] = widen<A>(src[e]);
    for (int64_t h = 0; h < H; ++h) ws.w[i * Hp + h] = in.w[t * H + h];
  }
  for (int64_t k0 = lo; k0 < hi; k0 += kIndexerKeys) {
    const int64_t k1 = std::min(hi, k0 + kIndexerKeys);
    bool needed = false;
    for (int64_t i = 0; i < n && !needed; ++i) needed = ws.base[i] < k1 && ws.base[i] + ws.visible[i] > k0;
    if (!needed) continue;
    for (int64_t j = 0; j < kIndexerKeys; ++j) {  // transpose the tile; keys past k1 score 0 and are not offered
      if (k0 + j >= k1) {
        for (int64_t c = 0; c < d; ++c) ws.kt[c * kIndexerKeys + j] = A(0);
        continue;
      }
      const T* key = in.k + (k0 + j) * d;
      for (int64_t c = 0; c < d; ++c) ws.kt[c * kIndexerKeys + j] = widen<A>(key[c]);
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t first = std::max(k0, ws.base[i]), last = std::min(k1, ws.base[i] + ws.visible[i]);
      if (first >= last) continue;
      indexer_score_tile(ws.q.data() + i * Hp * d, ws.w.data() + i * Hp, Hp, d, ws.kt.data(), ws.score.data());
      for (int64_t row = first; row < last; ++row) ws.best[i].offer({ws.score[row - k0], static_cast<int32_t>(row)});
    }
  }
  for (int64_t i = 0; i < n; ++i) ws.best[i].write(out + (t0 + i) * s.topk, s.topk);
}

}  // namespace v4k
