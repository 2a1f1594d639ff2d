// Torch-free Engram n-gram hash (v4_math.md §5): with tok_k the id k positions back (from `history`, then
// `pad_id`, before the first id), h_1 = tok_0 * mu_0 and h_n = h_{n-1} XOR (tok_{n-1} * mu_{n-1}) in int64
// with two's-complement wrap-around; column (n-2) * Hh + j is (h_n mod moduli[n-2, j]) + offsets[n-2, j]
// with the sign of the positive modulus (as torch.remainder). Bit-exact; the modulo is a multiply-high by
// a precomputed reciprocal, because a 64-bit divide per (position, column) dominated the hash.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

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

// a mod m with the sign of m, for a fixed m in [1, 2^63), exact for every int64 a (like torch.remainder).
// Unsigned division by an invariant (Granlund & Montgomery 1994, Fig. 4.1, N = 64): with l = ceil(log2 m)
// and magic = floor(2^64 (2^l - m) / m) + 1, q = (t + ((n - t) >> min(l, 1))) >> max(l - 1, 0) where
// t = mulhi(magic, n). A negative a maps to n = ~a = -a - 1 >= 0 and a mod m = m - 1 - (n mod m).
class FloorModulus {
 public:
  explicit FloorModulus(int64_t m) : divisor_(static_cast<uint64_t>(m)) {
    const int l = divisor_ == 1 ? 0 : 64 - __builtin_clzll(divisor_ - 1);
    const unsigned __int128 numerator = static_cast<unsigned __int128>((uint64_t{1} << l) - divisor_) << 64;
    magic_ = static_cast<uint64_t>(numerator / divisor_) + 1;
    shift1_ = std::min(l, 1);
    shift2_ = std::max(l - 1, 0);
  }

  int64_t operator()(int64_t a) const {
    const bool negative = a < 0;
    const uint64_t n = static_cast<uint64_t>(negative ? ~a : a);
    const uint64_t t = static_cast<uint64_t>((static_cast<unsigned __int128>(magic_) * n) >> 64);
    const uint64_t r = n - ((t + ((n - t) >> shift1_)) >> shift2_) * divisor_;
    return static_cast<int64_t>(negative ? divisor_ - 1 - r : r);
  }

 private:
  uint64_t divisor_, magic_;
  int shift1_, shift2_;
};

// The reciprocals of `count` moduli, all >= 1 (checked by the caller).
inline std::vector<FloorModulus> floor_moduli(const int64_t* moduli, int64_t count) {
  return std::vector<FloorModulus>(moduli, moduli + count);
}

inline int64_t min_value(const int64_t* x, int64_t n, int64_t none) {
  return n ? *std::min_element(x, x + n) : none;
}

// The (N-1) * Hh hash columns of position p of one sequence into dst. `history` holds the N-1 ids before
// ids[0], oldest first, or is nullptr for the start of a sequence (all pad_id).
inline void engram_hash_position(const int64_t* ids, const int64_t* history, int64_t pad_id,
                                 const int64_t* multipliers, const FloorModulus* moduli, const int64_t* offsets,
                                 const EngramHashShape& s, int64_t p, int64_t* dst) {
  const int64_t back = s.orders - 1;
  int64_t running = 0;
  for (int64_t k = 0; k <= back; ++k) {
    const int64_t at = p - k;  // position of the look-back; < 0 reaches into the history
    const int64_t token = at >= 0 ? ids[at] : history ? history[back + at] : pad_id;
    const int64_t term = wrapping_mul(token, multipliers[k]);
    running = k == 0 ? term : running ^ term;
    if (k == 0) continue;
    const FloorModulus* mod = moduli + (k - 1) * s.heads;
    const int64_t* off = offsets + (k - 1) * s.heads;
    int64_t* column = dst + (k - 1) * s.heads;
    for (int64_t j = 0; j < s.heads; ++j) column[j] = wrapping_add(mod[j](running), off[j]);
  }
}

// Hash columns [S, (N-1) * Hh] of positions [p0, p1) of one sequence.
inline void engram_hash_sequence(const int64_t* ids, const int64_t* history, int64_t pad_id,
                                 const int64_t* multipliers, const FloorModulus* moduli, const int64_t* offsets,
                                 const EngramHashShape& s, int64_t p0, int64_t p1, int64_t* out) {
  const int64_t columns = (s.orders - 1) * s.heads;
  for (int64_t p = p0; p < p1; ++p)
    engram_hash_position(ids, history, pad_id, multipliers, moduli, offsets, s, p, out + p * columns);
}

}  // namespace v4k
