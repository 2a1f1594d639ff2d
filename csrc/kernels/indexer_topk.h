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
// Two scorings share that driver: on values widened to the accumulation type (fp32 FMAs; fp64), and on
// bf16 pairs with fp32 accumulation (vdpbf16ps, on CPUs with AVX512-BF16; exact products, so only the
// order of the fp32 sums differs from the widened scoring).
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
#include <cstring>
#include <functional>
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

namespace avx512 {
// indexer_score_tile on bf16 pairs: q is [Hp, 2 * pairs] bf16 (a zero channel pads an odd d), kt is
// [pairs, kIndexerKeys, 2] (key j's channels 2p and 2p + 1 side by side). Defined in
// indexer_topk_avx512_bf16.cpp; call only when has_avx512_bf16().
void indexer_score_tile_bf16(const uint16_t* q, const float* w, int64_t Hp, int64_t pairs, const uint16_t* kt,
                             float* score);
}  // namespace avx512

// How queries and keys are stored for the tile products: E is one column of the packed operands, and
// columns(d) of them hold a row of d channels.
template <typename A>
struct WideScoring {  // widened to the accumulation type, one channel per column
  using E = A;
  static int64_t columns(int64_t d) { return d; }
  template <typename T>
  static void pack(const T* src, int64_t d, E* dst) {
    for (int64_t c = 0; c < d; ++c) dst[c] = widen<A>(src[c]);
  }
  static void tile(const E* q, const A* w, int64_t Hp, int64_t columns, const E* kt, A* score) {
    indexer_score_tile(q, w, Hp, columns, kt, score);
  }
};

struct Bf16PairScoring {  // bf16 as it is, two channels per 32-bit column (needs has_avx512_bf16())
  using E = uint32_t;
  static int64_t columns(int64_t d) { return (d + 1) / 2; }
  static void pack(const bf16* src, int64_t d, E* dst) {
    dst[columns(d) - 1] = 0;
    std::memcpy(dst, src, d * sizeof(bf16));
  }
  static void tile(const E* q, const float* w, int64_t Hp, int64_t columns, const E* kt, float* score) {
    avx512::indexer_score_tile_bf16(reinterpret_cast<const uint16_t*>(q), w, Hp, columns,
                                    reinterpret_cast<const uint16_t*>(kt), score);
  }
};

// A candidate in a form that sorts ascending in rank order (ranks_before: NaN first, then higher scores,
// ties to the lower row). fp32: one 64-bit integer, the score's bits mapped to an order-preserving
// integer (every NaN to the top, -0 to +0) and inverted, above the row; fp64: the pair and ranks_before.
template <typename A>
struct RankKey {
  using type = Candidate<A>;
  static type make(A score, int32_t index) { return {score, index}; }
  static int32_t index(const type& key) { return key.index; }
  struct Less {
    bool operator()(const type& a, const type& b) const { return ranks_before(a, b); }
  };
  static void sort(type* keys, int64_t n, type*) { std::sort(keys, keys + n, Less{}); }
};
template <>
struct RankKey<float> {
  using type = uint64_t;
  static type make(float score, int32_t index) {
    const float canonical = score + 0.0f;  // -0 + 0 = +0: zeros of either sign tie
    uint32_t bits;
    std::memcpy(&bits, &canonical, sizeof bits);
    const uint32_t ordered = std::isnan(score) ? 0xFFFFFFFFu : bits & 0x80000000u ? ~bits : bits | 0x80000000u;
    return static_cast<uint64_t>(~ordered) << 32 | static_cast<uint32_t>(index);
  }
  static int32_t index(type key) { return static_cast<int32_t>(static_cast<uint32_t>(key)); }
  using Less = std::less<type>;
  // LSD radix sort by bytes (branch-free, unlike a comparison sort on random scores); bytes that every key
  // shares (the high bytes of the rows) cost one counting pass and no move.
  static void sort(type* keys, int64_t n, type* scratch) {
    type* src = keys;
    type* dst = scratch;
    for (int shift = 0; shift < 64 && n > 1; shift += 8) {
      int64_t start[257] = {};
      for (int64_t i = 0; i < n; ++i) ++start[((src[i] >> shift) & 255) + 1];
      if (start[((src[0] >> shift) & 255) + 1] == n) continue;
      for (int b = 0; b < 256; ++b) start[b + 1] += start[b];
      for (int64_t i = 0; i < n; ++i) dst[start[(src[i] >> shift) & 255]++] = src[i];
      std::swap(src, dst);
    }
    if (src != keys) std::copy(src, src + n, keys);
  }
};

// The best `cap` candidates seen so far, in a buffer of 2 * cap: when it fills, nth_element keeps the best
// cap and their worst becomes the bar a new candidate must beat. Amortised O(1) per candidate, no full sort.
template <typename A>
struct IndexerBest {
  using Key = typename RankKey<A>::type;
  using Less = typename RankKey<A>::Less;
  Key* buf;
  int64_t cap, size = 0;
  bool barred = false;
  Key bar{};

  void offer(A score, int32_t index) {
    const Key key = RankKey<A>::make(score, index);
    if (barred && !Less{}(key, bar)) return;
    buf[size++] = key;
    if (size == 2 * cap) keep_best(), barred = true, bar = buf[cap - 1];
  }
  void keep_best() {
    std::nth_element(buf, buf + cap - 1, buf + size, Less{});
    size = cap;
  }
  // Writes the rows best first, then -1 up to `width`.
  void write(int32_t* dst, int64_t width) {
    if (size > cap) keep_best();
    RankKey<A>::sort(buf, size, buf + cap);  // size <= cap now: the buffer's second half is free
    for (int64_t slot = 0; slot < width; ++slot) dst[slot] = slot < size ? RankKey<A>::index(buf[slot]) : -1;
  }
};

// Per-thread buffers of indexer_topk_chunk, sized once for `queries` queries per chunk; q and kt hold the
// packed operands of the scoring S.
template <typename A, typename S>
struct IndexerWorkspace {
  using E = typename S::E;
  std::vector<E> q, kt, key;
  std::vector<A> w, score;
  std::vector<typename RankKey<A>::type> candidates;
  std::vector<IndexerBest<A>> best;
  std::vector<int64_t> base, visible;

  IndexerWorkspace(const IndexerShape& s, int64_t queries) {
    const int64_t Hp = padded_heads(s.H), columns = S::columns(s.d);
    q.assign(queries * Hp * columns, E(0));
    kt.assign(columns * kIndexerKeys, E(0));
    key.assign(columns, E(0));
    w.assign(queries * Hp, A(0));
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
template <typename T, typename A, typename S>
void indexer_topk_chunk(const IndexerInputs<T, A>& in, const IndexerShape& s, int64_t t0, int64_t t1, int32_t* out,
                        IndexerWorkspace<A, S>& ws) {
  using E = typename S::E;
  const int64_t H = s.H, d = s.d, Hp = IndexerWorkspace<A, S>::padded_heads(H), n = t1 - t0;
  const int64_t columns = S::columns(d);
  int64_t lo = s.N, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = t0 + i;
    ws.base[i] = in.k_offset ? in.k_offset[t] : 0;
    ws.visible[i] = indexer_visible(in.q_pos[t], s.ratio);
    ws.best[i] = {ws.candidates.data() + i * 2 * IndexerWorkspace<A, S>::kept(s), std::min(s.topk, ws.visible[i])};
    if (ws.visible[i] > 0) lo = std::min(lo, ws.base[i]), hi = std::max(hi, ws.base[i] + ws.visible[i]);
    E* qi = ws.q.data() + i * Hp * columns;
    for (int64_t h = 0; h < H; ++h) S::pack(in.q + (t * H + h) * d, d, qi + h * columns);
    for (int64_t h = 0; h < H; ++h) ws.w[i * Hp + h] = in.w[t * H + h];
  }
  for (int64_t k0 = lo; k0 < hi; k0 += kIndexerKeys) {
    const int64_t k1 = std::min(hi, k0 + kIndexerKeys);
    bool needed = false;
    for (int64_t i = 0; i < n && !needed; ++i) needed = ws.base[i] < k1 && ws.base[i] + ws.visible[i] > k0;
    if (!needed) continue;
    for (int64_t j = 0; j < kIndexerKeys; ++j) {  // transpose the tile; keys past k1 score 0 and are not offered
      if (k0 + j >= k1) {
        for (int64_t c = 0; c < columns; ++c) ws.kt[c * kIndexerKeys + j] = E(0);
        continue;
      }
      S::pack(in.k + (k0 + j) * d, d, ws.key.data());
      for (int64_t c = 0; c < columns; ++c) ws.kt[c * kIndexerKeys + j] = ws.key[c];
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t first = std::max(k0, ws.base[i]), last = std::min(k1, ws.base[i] + ws.visible[i]);
      if (first >= last) continue;
      S::tile(ws.q.data() + i * Hp * columns, ws.w.data() + i * Hp, Hp, columns, ws.kt.data(), ws.score.data());
      for (int64_t row = first; row < last; ++row) ws.best[i].offer(ws.score[row - k0], static_cast<int32_t>(row));
    }
  }
  for (int64_t i = 0; i < n; ++i) ws.best[i].write(out + (t0 + i) * s.topk, s.topk);
}

}  // namespace v4k
