// Torch-free Engram n-gram hash (v4_math.md §5): with tok_k the id k positions back (from `history`, then
// `pad_id`, before the first id), h_1 = tok_0 * mu_0 and h_n = h_{n-1} XOR (tok_{n-1} * mu_{n-1}) in int64
// with two's-complement wrap-around; column (n-2) * Hh + j is (h_n mod moduli[n-2, j]) + offsets[n-2, j]
// with the sign of the positive modulus (as torch.remainder). One fused pass per sequence, bit-exact.
#pragma once
#include <algorithm>
#include <cstdint>

namespace v4k {

struct EngramHashShape {
  int64_t S;       // positions per sequence
  int64_t orders;  // N = max n-gram = number of multipliers (look-backs 0..N-1)
  int64_t heads;   // Hh, moduli per order
};

// Products and sums in uint64 wrap exactly like two's-complement int64 (signed overflow is undefined).
inline int64_t wrapping_mul(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
}
inline int64_t wrapping_add(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}

// a mod m with the sign of m (> 0), like torch.remainder and Python's %.
inline int64_t floor_mod(int64_t a, int64_t m) {
  const int64_t r = a % m;
  return r < 0 ? r + m : r;
}

inline int64_t min_value(const int64_t* x, int64_t n, int64_t none) {
  return n ? *std::min_element(x, x + n) : none;
}

// Hash columns [S, (N-1) * Hh] of positions [p0, p1) of one sequence. `history` holds the N-1 ids before
// ids[0], oldest first, or is nullptr for the start of a sequence (all pad_id).
inline void engram_hash_sequence(const int64_t* ids, const int64_t* history, int64_t pad_id,
                                 const int64_t* multipliers, const int64_t* moduli, const int64_t* offsets,
                                 const EngramHashShape& s, int64_t p0, int64_t p1, int64_t* out) {
  const int64_t back = s.orders - 1, columns = back * s.heads;
  for (int64_t p = p0; p < p1; ++p) {
    int64_t running = 0;
    for (int64_t k = 0; k <= back; ++k) {
      const int64_t at = p - k;  // position of the look-back; < 0 reaches into the history
      const int64_t token = at >= 0 ? ids[at] : history ? history[back + at] : pad_id;
      const int64_t term = wrapping_mul(token, multipliers[k]);
      running = k == 0 ? term : running ^ term;
      if (k == 0) continue;
      const int64_t* mod = moduli + (k - 1) * s.heads;
      const int64_t* off = offsets + (k - 1) * s.heads;
      int64_t* dst = out + p * columns + (k - 1) * s.heads;
      for (int64_t j = 0; j < s.heads; ++j) dst[j] = wrapping_add(floor_mod(running, mod[j]), off[j]);
    }
  }
}

}  // namespace v4k
