// Building blocks of the vector sparse attention kernels, generic over a vector-width trait and a
// dtype policy. Include this only AFTER its includes and a `#pragma GCC target(...)` enabling AVX2 and
// FMA, plus AVX-512 (F, BW, VL, DQ) when the translation unit defines V4K_SIMD_AVX512 first: everything
// here has internal linkage, so each translation unit compiles its own copy for its own ISA.
//
// A width trait W (Avx2, Avx512) provides F (kLanes floats), lane-wise arithmetic and exp, with the tile
// shapes that fit its register file: logits tiles of kLogitRows rows x kLogitVecs vectors of heads, PV
// tiles of kPvHeads heads x kPvVecs vectors of columns (kTailVecs for the column tail).
//
// A dtype policy V provides: W, T (element type), Q and kStep (q^T holds one Q per head for every step
// of kStep columns), Op (a product operand), transpose_q(q, heads, dim, hp, qt), load_q(qt) (kLanes
// heads of one step), broadcast(row, step) (the row's columns of that step), dot(acc, a, b) (acc +=
// lane-wise products of one step), store_probs(ws, row, h0, p0, p1) (keeps the weights of kLanes heads
// for an even row and the next one, for the PV product), accumulate(ws, block, valid, heads, dim)
// (acc += P x rows for the block) and store_out(out, acc, factor, dim).
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/softmax_sink.h"
#include "kernels/sparse_attn_simd.h"
#ifdef V4K_SIMD_AVX512
#include "kernels/exp_avx512.h"  // the translation unit includes it before its target pragma (isa.h is shared)
#endif

namespace v4k::simd {
namespace {

const float kNegInf = -std::numeric_limits<float>::infinity();

inline int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

inline float widen(float x) { return x; }
inline float widen(uint16_t bf16_bits) {  // bf16 is the top half of an fp32
  const uint32_t bits = static_cast<uint32_t>(bf16_bits) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// exp(x) = 2^n * p(r) with x = n ln2 + r, |r| <= ln2 / 2: r by a two-constant Cody-Waite reduction,
// p a degree-6 polynomial (~1 ulp), evaluated with the width's own operations.
template <typename W>
typename W::F exp_poly(typename W::F x, typename W::F* n_out) {
  using F = typename W::F;
  const F n = W::round(W::mul(x, W::set1(1.44269504f)));
  F r = W::fma(n, W::set1(-0.693359375f), x);
  r = W::fma(n, W::set1(2.12194440e-4f), r);
  constexpr float kCoefficients[] = {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
  F p = W::set1(1.0f / 720);
  for (float c : kCoefficients) p = W::fma(p, r, W::set1(c));
  *n_out = n;
  return p;
}

// AVX2 + FMA: 8 lanes, 16 registers.
struct Avx2 {
  using F = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kLogitRows = 2, kLogitVecs = 4;          // 8 accumulators + 6 operands
  static constexpr int kPvHeads = 4, kPvVecs = 3, kTailVecs = 1;  // 12 accumulators + 3 rows + 1 weight

  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float x) { return _mm256_set1_ps(x); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F round(F x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F x) { _mm256_storeu_ps(p, x); }
  // bf16 widens exactly to fp32 (the bits move to the top half).
  static F load(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  // fp32 -> bf16 rounded to nearest even (like v4k::narrow); NaN stays a quiet NaN.
  static void store(uint16_t* p, F x) {
    const __m256i bits = _mm256_castps_si256(x);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, bias), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    rounded = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7fc0), nan);
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(rounded), _mm256_extracti128_si256(rounded, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }
  // Inputs below -87.3 (2^n would be subnormal) and -inf give exactly 0; NaN stays NaN (not-less-than is
  // true for NaN, and min/max return their second operand when one is NaN).
  static F exp(F x) {
    const F in_range = _mm256_cmp_ps(x, set1(-87.3f), _CMP_NLT_UQ);
    x = _mm256_min_ps(set1(88.3f), _mm256_max_ps(set1(-87.3f), x));
    F n;
    const F p = exp_poly<Avx2>(x, &n);
    const __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_and_ps(mul(p, _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23))), in_range);
  }
};

#ifdef V4K_SIMD_AVX512
// AVX-512 F/BW/VL/DQ: 16 lanes, 32 registers.
struct Avx512 {
  using F = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kLogitRows = 4, kLogitVecs = 4;            // 16 accumulators + 5 operands
  static constexpr int kPvHeads = 4, kPvVecs = 6, kTailVecs = 2;  // 24 accumulators + 6 rows + 1 weight

  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float x) { return _mm512_set1_ps(x); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F round(F x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F x) { _mm512_storeu_ps(p, x); }
  static F exp(F x) { return exp16(x); }  // the AVX-512 exp shared with the KV compressor
};
#endif

// logits [R rows, HV vectors of heads from h0] = scale * rows x q^T, one broadcast row element x kLanes
// heads of q^T per product.
template <typename V, int R, int HV>
void logits_tile(const typename V::T* const* rows, const typename V::Q* qt, int64_t hp, int64_t steps, float scale,
                 float* logits) {
  using W = typename V::W;
  typename W::F acc[R][HV];
  for (auto& row : acc)
    for (auto& a : row) a = W::zero();
  for (int64_t s = 0; s < steps; ++s) {
    typename V::Op q[HV];
    for (int v = 0; v < HV; ++v) q[v] = V::load_q(qt + s * hp + W::kLanes * v);
    for (int i = 0; i < R; ++i) {
      const typename V::Op r = V::broadcast(rows[i], s);
      for (int v = 0; v < HV; ++v) acc[i][v] = V::dot(acc[i][v], r, q[v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < HV; ++v) W::store(logits + i * hp + W::kLanes * v, W::mul(acc[i][v], W::set1(scale)));
}

// logits [rows, hp] of the first `valid` rows rounded up to the tile's rows (pads are zero rows).
template <typename V>
void block_logits(const Workspace& ws, const typename V::T* const* block, int64_t valid, int64_t dim, float scale) {
  using W = typename V::W;
  constexpr int R = W::kLogitRows, HV = W::kLogitVecs;
  static_assert(kBlock % R == 0, "whole row tiles per block");
  const auto* qt = reinterpret_cast<const typename V::Q*>(ws.qt);
  const int64_t vecs = ws.hp / W::kLanes, steps = dim / V::kStep;
  for (int64_t r0 = 0; r0 < valid; r0 += R) {
    float* logits = ws.logits + r0 * ws.hp;
    int64_t v = 0;
    for (; v + HV <= vecs; v += HV)
      logits_tile<V, R, HV>(block + r0, qt + W::kLanes * v, ws.hp, steps, scale, logits + W::kLanes * v);
    for (; v < vecs; ++v)
      logits_tile<V, R, 1>(block + r0, qt + W::kLanes * v, ws.hp, steps, scale, logits + W::kLanes * v);
  }
}

// Online-softmax update down the first `valid` rows, kLanes heads at a time: where a head's running
// maximum grows, its sum and accumulator are rescaled; then its weights exp(logit - peak) go to
// V::store_probs (0 for the row after an odd last one).
template <typename V>
void block_softmax(const Workspace& ws, int64_t heads, int64_t dim, int64_t valid) {
  using W = typename V::W;
  using F = typename W::F;
  constexpr int L = W::kLanes;
  for (int64_t h0 = 0; h0 < ws.hp; h0 += L) {
    const float* logits = ws.logits + h0;
    F top = W::set1(kNegInf);
    for (int64_t r = 0; r < valid; ++r) top = W::max(top, W::load(logits + r * ws.hp));
    const F old_peak = W::load(ws.peak + h0), peak = W::max(old_peak, top);  // finite: valid >= 1
    const F shrink = W::exp(W::sub(old_peak, peak));                           // 1 where it did not grow
    W::store(ws.peak + h0, peak);
    W::store(ws.shrink + h0, shrink);
    for (int64_t h = h0; h < h0 + L && h < heads; ++h) {
      if (ws.shrink[h] == 1.0f) continue;
      float* a = ws.acc + h * dim;
      for (int64_t c = 0; c < dim; c += L) W::store(a + c, W::mul(W::load(a + c), W::set1(ws.shrink[h])));
    }
    F kept = W::zero();
    for (int64_t r = 0; r < valid; r += 2) {
      const F p0 = W::exp(W::sub(W::load(logits + r * ws.hp), peak));
      const F p1 = r + 1 < valid ? W::exp(W::sub(W::load(logits + (r + 1) * ws.hp), peak)) : W::zero();
      kept = W::add(kept, W::add(p0, p1));
      V::store_probs(ws, r, h0, p0, p1);
    }
    W::store(ws.total + h0, W::add(W::mul(W::load(ws.total + h0), shrink), kept));
  }
}

// Runs Tile<TH, VECS>::run(h, c0, args...) over all heads and column vectors; head tails use
// single-head tiles, column tails (dim is a multiple of 32) tiles of kTailVecs vectors.
template <typename W, template <int, int> class Tile, typename... Args>
void over_tiles(int64_t heads, int64_t dim, Args... args) {
  constexpr int TH = W::kPvHeads, VECS = W::kPvVecs, TAIL = W::kTailVecs;
  const int64_t vecs = dim / W::kLanes;
  for (int64_t v = 0; v < vecs;) {
    const bool full = v + VECS <= vecs;
    const int64_t c0 = W::kLanes * v;
    int64_t h = 0;
    for (; h + TH <= heads; h += TH)
      full ? Tile<TH, VECS>::run(h, c0, args...) : Tile<TH, TAIL>::run(h, c0, args...);
    for (; h < heads; ++h) full ? Tile<1, VECS>::run(h, c0, args...) : Tile<1, TAIL>::run(h, c0, args...);
    v += full ? VECS : TAIL;
  }
}

// The dtype policy of kernels that widen every element to fp32 on load (fp32 itself, and bf16 without
// a bf16 dot-product instruction): fp32 FMAs throughout, fp32 weights for PV.
template <typename Width, typename Element>
struct Widening {
  using W = Width;
  using T = Element;
  using F = typename W::F;
  using Q = float;
  using Op = F;
  static constexpr int kStep = 1;

  static void transpose_q(const T* q, int64_t heads, int64_t dim, int64_t hp, float* qt) {
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t c = 0; c < dim; ++c) qt[c * hp + h] = widen(q[h * dim + c]);
  }
  static F load_q(const float* qt) { return W::load(qt); }
  static F broadcast(const T* row, int64_t step) { return W::set1(widen(row[step])); }
  static F dot(F acc, F a, F b) { return W::fma(a, b, acc); }
  static void store_probs(const Workspace& ws, int64_t row, int64_t h0, F p0, F p1) {
    W::store(ws.probs + row * ws.hp + h0, p0);
    W::store(ws.probs + (row + 1) * ws.hp + h0, p1);
  }

  // acc [TH heads, VECS vectors of columns from c0] += probs [valid, TH] x block [valid, same columns].
  template <int TH, int VECS>
  struct PvTile {
    static void run(int64_t h, int64_t c0, const Workspace* ws, const T* const* block, int64_t valid, int64_t dim) {
      float* acc = ws->acc + h * dim + c0;
      const float* probs = ws->probs + h;
      F a[TH][VECS];
      for (int i = 0; i < TH; ++i)
        for (int j = 0; j < VECS; ++j) a[i][j] = W::load(acc + i * dim + W::kLanes * j);
      for (int64_t b = 0; b < valid; ++b) {
        F r[VECS];
        for (int j = 0; j < VECS; ++j) r[j] = W::load(block[b] + c0 + W::kLanes * j);
        for (int i = 0; i < TH; ++i) {
          const F p = W::set1(probs[b * ws->hp + i]);
          for (int j = 0; j < VECS; ++j) a[i][j] = W::fma(p, r[j], a[i][j]);
        }
      }
      for (int i = 0; i < TH; ++i)
        for (int j = 0; j < VECS; ++j) W::store(acc + i * dim + W::kLanes * j, a[i][j]);
    }
  };

  static void accumulate(const Workspace& ws, const T* const* block, int64_t valid, int64_t heads, int64_t dim) {
    over_tiles<W, PvTile>(heads, dim, &ws, block, valid, dim);
  }
  static void store_out(T* out, const float* acc, F factor, int64_t dim) {
    for (int64_t c = 0; c < dim; c += W::kLanes) W::store(out + c, W::mul(W::load(acc + c), factor));
  }
};

// One query token over n_rows rows, blocks of kBlock (the last one padded with the zero row).
template <typename V>
void attend(const typename V::T* q, const typename V::T* const* rows, int64_t n_rows, const float* sink,
            int64_t heads, int64_t dim, float scale, typename V::T* out, float* lse, const Workspace& ws) {
  using T = typename V::T;
  for (int64_t h = 0; h < ws.hp; ++h) ws.peak[h] = kNegInf, ws.total[h] = 0;
  std::memset(ws.acc, 0, sizeof(float) * heads * dim);
  V::transpose_q(q, heads, dim, ws.hp, reinterpret_cast<typename V::Q*>(ws.qt));
  const T* block[kBlock];
  for (int64_t r0 = 0; r0 < n_rows; r0 += kBlock) {
    const int64_t valid = smaller(kBlock, n_rows - r0);
    for (int64_t b = 0; b < kBlock; ++b) block[b] = b < valid ? rows[r0 + b] : static_cast<const T*>(ws.zero_row);
    block_logits<V>(ws, block, valid, dim, scale);
    block_softmax<V>(ws, heads, dim, valid);
    V::accumulate(ws, block, valid, heads, dim);
  }
  for (int64_t h = 0; h < heads; ++h) {
    const float factor = sink_softmax_factor<float>(ws.peak[h], ws.total[h], sink ? sink + h : nullptr, lse + h);
    V::store_out(out + h * dim, ws.acc + h * dim, V::W::set1(factor), dim);
  }
}

}  // namespace
}  // namespace v4k::simd
