// Torch-free fused Engram hash + gather + dequantise (v4_math.md §5): one pass per token hashes the
// (N-1) * Hh columns of tokens a little ahead, prefetches their table rows, and gathers (converting or
// dequantising) the rows of the current token into the output. No intermediate row tensor; bit-exact
// with engram_lookup(table, engram_hash(...)), because both use the same helpers.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/engram_hash.h"
#include "kernels/engram_lookup.h"

namespace v4k {

// The hash layout of one layer: multipliers [N], reciprocals of moduli [(N-1) * Hh], offsets [(N-1) * Hh].
struct EngramHashLayout {
  const int64_t* multipliers;
  const FloorModulus* moduli;
  const int64_t* offsets;
  EngramHashShape shape;
  int64_t pad_id;
};

// Gathers positions [p0, p1) of one sequence: out[p, j * E : (j + 1) * E] = row j of position p (zeros for
// a row of -1). Tokens are hashed just far enough ahead that the row kPrefetchRows ahead of the one being
// copied (in (token, column) order, as engram_gather) can be prefetched: a steady number of rows in flight,
// no bursts of a whole token's rows. Returns false, leaving the rest of the output unwritten, at a row
// outside [-1, R).
template <typename Rows, typename Out>
bool engram_hash_lookup_sequence(const int64_t* ids, const int64_t* history, const EngramHashLayout& layout,
                                 Rows& source, int64_t R, int64_t E, int64_t p0, int64_t p1, Out* out) {
  const int64_t columns = (layout.shape.orders - 1) * layout.shape.heads;
  const int64_t lead = (kPrefetchRows + columns - 1) / columns, ring = lead + 1;  // tokens hashed ahead
  std::vector<int64_t> rows(ring * columns);  // the rows of tokens p .. p + lead
  auto rows_of = [&](int64_t p) { return rows.data() + (p % ring) * columns; };
  auto hash = [&](int64_t p) {
    int64_t* row = rows_of(p);
    engram_hash_position(ids, history, layout.pad_id, layout.multipliers, layout.moduli, layout.offsets,
                         layout.shape, p, row);
    for (int64_t j = 0; j < columns; ++j)
      if (row[j] < -1 || row[j] >= R) return false;
    return true;
  };
  int64_t ahead_token = p0, ahead_column = 0;  // the next row to prefetch
  auto prefetch_next = [&] {
    if (ahead_token >= p1) return;
    if (const int64_t r = rows_of(ahead_token)[ahead_column]; r >= 0) source.prefetch(r);
    if (++ahead_column == columns) ahead_column = 0, ++ahead_token;
  };
  for (int64_t p = p0; p < std::min(p0 + lead, p1); ++p)
    if (!hash(p)) return false;
  for (int64_t i = 0; i < kPrefetchRows; ++i) prefetch_next();
  for (int64_t p = p0; p < p1; ++p) {
    if (p + lead < p1 && !hash(p + lead)) return false;
    const int64_t* row = rows_of(p);
    Out* dst = out + p * columns * E;
    for (int64_t j = 0; j < columns; ++j) {
      prefetch_next();
      gather_row(source, row[j], E, dst + j * E);
    }
  }
  return true;
}

}  // namespace v4k
