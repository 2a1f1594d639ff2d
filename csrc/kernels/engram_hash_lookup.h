// Torch-free fused Engram hash + gather + dequantise (v4_math.md §5): one pass per token hashes the
// (N-1) * Hh columns, prefetches their table rows kPrefetchTokens tokens ahead, and gathers (converting or
// dequantising) the rows of the current token into the output. No intermediate row tensor; bit-exact
// with engram_lookup(table, engram_hash(...)), because both use the same helpers.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/engram_hash.h"
#include "kernels/engram_lookup.h"

namespace v4k {

// Tokens whose rows are in flight ahead of the one being gathered (V4.1: 24 rows a token).
constexpr int64_t kPrefetchTokens = 2;

// The hash layout of one layer: multipliers [N], reciprocals of moduli [(N-1) * Hh], offsets [(N-1) * Hh].
struct EngramHashLayout {
  const int64_t* multipliers;
  const FloorModulus* moduli;
  const int64_t* offsets;
  EngramHashShape shape;
  int64_t pad_id;
};

// Gathers positions [p0, p1) of one sequence: out[p, j * E : (j + 1) * E] = row j of position p (zeros for
// a row of -1). The rows of token p + kPrefetchTokens are hashed before token p is gathered, and row j of
// that token is prefetched as row j of token p is copied: a steady kPrefetchTokens * columns rows in flight
// (bursts of a whole token's rows overflow the core's outstanding-miss slots). Returns false, leaving the
// rest of the output unwritten, at a row outside [-1, R).
template <typename Rows, typename Out>
bool engram_hash_lookup_sequence(const int64_t* ids, const int64_t* history, const EngramHashLayout& layout,
                                 Rows& source, int64_t R, int64_t E, int64_t p0, int64_t p1, Out* out) {
  const int64_t columns = (layout.shape.orders - 1) * layout.shape.heads, ring = kPrefetchTokens + 1;
  std::vector<int64_t> rows(ring * columns);  // the rows of tokens p .. p + kPrefetchTokens
  auto rows_of = [&](int64_t p) { return rows.data() + (p % ring) * columns; };
  auto hash = [&](int64_t p) {
    int64_t* row = rows_of(p);
    engram_hash_position(ids, history, layout.pad_id, layout.multipliers, layout.moduli, layout.offsets,
                         layout.shape, p, row);
    for (int64_t j = 0; j < columns; ++j)
      if (row[j] < -1 || row[j] >= R) return false;
    return true;
  };
  for (int64_t p = p0; p < std::min(p0 + kPrefetchTokens, p1); ++p) {
    if (!hash(p)) return false;
    for (int64_t j = 0; j < columns; ++j)
      if (rows_of(p)[j] >= 0) source.prefetch(rows_of(p)[j]);
  }
  for (int64_t p = p0; p < p1; ++p) {
    const bool ahead = p + kPrefetchTokens < p1;
    if (ahead && !hash(p + kPrefetchTokens)) return false;
    const int64_t *row = rows_of(p), *next = rows_of(p + kPrefetchTokens);
    Out* dst = out + p * columns * E;
    for (int64_t j = 0; j < columns; ++j) {
      if (ahead && next[j] >= 0) source.prefetch(next[j]);
      gather_row(source, row[j], E, dst + j * E);
    }
  }
  return true;
}

}  // namespace v4k
