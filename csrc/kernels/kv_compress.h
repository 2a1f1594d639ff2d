// Torch-free stateful KV compressor (v4_math.md §3.4): gated softmax pooling of blocks of `ratio` tokens per
// channel, C[f] = sum_j softmax_j(g[j, f]) * a[j, f] with g = score + ape[pos % ratio], and with `overlap`
// (CSA) 2*ratio candidates per channel: the first halves of the previous block and the second halves of
// the current one. The unfinished block (and, with overlap, the previous complete block) lives in the
// per-sequence state, so any split of a sequence into calls gives the same entries.
//
// Blocks are independent once their tokens are known, so a call is a list of (sequence, block) items that
// can run on any thread; the state is updated afterwards, per sequence. One block's candidates are widened
// into [ratio, F] buffers; the softmax runs per channel tile (max, exp and sum, weighted sum) over the
// candidates with channels innermost, so the loops vectorise. The fp32 exp is a polynomial (below 2 ulp of
// the true value), not the one torch uses, so entries agree with the reference to a few ulp, not bit for bit.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/dtypes.h"
#include "kernels/isa.h"

namespace v4k {

constexpr int64_t kPoolChannels = 64;  // channels per softmax tile (candidate exps stay in L1)

// exp(x) for x <= 0 (softmax arguments): Cody-Waite reduction and a degree-6 polynomial; 0 below -87
// (where exp is subnormal), NaN stays NaN. Plain arithmetic so that loops over it vectorise: n is rounded
// with the 1.5 * 2^23 shifter because std::floor blocks GCC's vectoriser without -fno-trapping-math.
V4K_INLINE float softmax_exp(float x) {
  constexpr float shifter = 12582912.0f;
  const bool underflow = x < -87.0f;
  x = x < -87.0f ? -87.0f : x;
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return underflow ? 0.0f : y * scale;
}
V4K_INLINE double softmax_exp(double x) { return std::exp(x); }

// out[f] = sum_j softmax_j(g[j][f]) * a[j][f] for f < width, over n candidate rows given as pointers
// already offset to their first channel. `e` holds n * kPoolChannels scratch values.
template <typename A>
V4K_INLINE void pool_channels_body(const A* const* a, const A* const* g, int64_t n, int64_t width, A* out, A* e) {
  for (int64_t f0 = 0; f0 < width; f0 += kPoolChannels) {
    const int64_t w = std::min(kPoolChannels, width - f0);
    A peak[kPoolChannels], total[kPoolChannels], acc[kPoolChannels];
    for (int64_t f = 0; f < w; ++f) peak[f] = -std::numeric_limits<A>::infinity(), total[f] = 0, acc[f] = 0;
    for (int64_t j = 0; j < n; ++j) {
      const A* gj = g[j] + f0;
      for (int64_t f = 0; f < w; ++f) peak[f] = gj[f] > peak[f] ? gj[f] : peak[f];
    }
    for (int64_t j = 0; j < n; ++j) {
      const A* gj = g[j] + f0;
      A* ej = e + j * kPoolChannels;
      for (int64_t f = 0; f < w; ++f) {
        ej[f] = softmax_exp(gj[f] - peak[f]);
        total[f] += ej[f];
      }
    }
    A inverse[kPoolChannels];
    for (int64_t f = 0; f < w; ++f) inverse[f] = A(1) / total[f];
    for (int64_t j = 0; j < n; ++j) {
      const A* aj = a[j] + f0;
      const A* ej = e + j * kPoolChannels;
      for (int64_t f = 0; f < w; ++f) acc[f] += ej[f] * inverse[f] * aj[f];
    }
    for (int64_t f = 0; f < w; ++f) out[f0 + f] = acc[f];
  }
}

V4K_DISPATCH(void, pool_channels, pool_channels_body,
             (const float* const* a, const float* const* g, int64_t n, int64_t width, float* out, float* e),
             (a, g, n, width, out, e))
V4K_DISPATCH(void, pool_channels, pool_channels_body,
             (const double* const* a, const double* const* g, int64_t n, int64_t width, double* out, double* e),
             (a, g, n, width, out, e))

// a = widen(kv), g = widen(score) + bias over one token row of F channels.
template <typename T, typename A>
V4K_INLINE void widen_token_body(const T* kv, const T* score, const A* bias, int64_t F, A* a, A* g) {
  for (int64_t f = 0; f < F; ++f) a[f] = widen<A>(kv[f]);
  for (int64_t f = 0; f < F; ++f) g[f] = widen<A>(score[f]) + bias[f];
}

#define V4K_WIDEN_TOKEN(T, A)                                                                                 \
  V4K_DISPATCH(void, widen_token, (widen_token_body<T, A>),                                                   \
               (const T* kv, const T* score, const A* bias, int64_t F, A* a, A* g), (kv, score, bias, F, a, g))
V4K_WIDEN_TOKEN(float, float)
V4K_WIDEN_TOKEN(double, double)
V4K_WIDEN_TOKEN(bf16, float)
V4K_WIDEN_TOKEN(_Float16, float)
#undef V4K_WIDEN_TOKEN

struct KvCompressShape {
  int64_t F, ratio;  // projected width (2 * d with overlap) and block length
  bool overlap;
  int64_t d() const { return overlap ? F / 2 : F; }
  int64_t first() const { return overlap ? ratio : 0; }  // state row of slot 0 of the current block
};

// One sequence of the call: its new rows and its state ([c * ratio, F] in A, updated in place).
template <typename T, typename A>
struct KvSequence {
  const T* kv;     // [L, F] new values
  const T* score;  // [L, F] new gate logits
  const A* ape;    // [ratio, F]
  int64_t start, length;
  A* kv_state;
  A* score_state;

  int64_t filled(const KvCompressShape& s) const { return start % s.ratio; }
  int64_t blocks(const KvCompressShape& s) const { return (filled(s) + length) / s.ratio; }

  // Token c of the current span (the state's filled slots, then the new rows) widened, logit biased.
  void token(const KvCompressShape& s, int64_t c, A* a, A* g) const {
    const int64_t fill = filled(s);
    if (c < fill) {
      std::memcpy(a, kv_state + (s.first() + c) * s.F, s.F * sizeof(A));
      std::memcpy(g, score_state + (s.first() + c) * s.F, s.F * sizeof(A));
      return;
    }
    // start - fill is a multiple of ratio, so token c sits at slot c % ratio of its block
    widen_token(kv + (c - fill) * s.F, score + (c - fill) * s.F, ape + (c % s.ratio) * s.F, s.F, a, g);
  }
  void block(const KvCompressShape& s, int64_t i, A* a, A* g) const {
    for (int64_t c = 0; c < s.ratio; ++c) token(s, i * s.ratio + c, a + c * s.F, g + c * s.F);
  }
};

// Per-thread buffers of kv_compress_blocks.
template <typename A>
struct KvCompressWorkspace {
  std::vector<A> cur_a, cur_g, prev_a, prev_g, e;
  std::vector<const A*> a_rows, g_rows;
  explicit KvCompressWorkspace(const KvCompressShape& s)
      : cur_a(s.ratio * s.F), cur_g(s.ratio * s.F), prev_a(s.ratio * s.F), prev_g(s.ratio * s.F),
        e(2 * s.ratio * kPoolChannels), a_rows(2 * s.ratio), g_rows(2 * s.ratio) {}
};

// Entries of blocks [i0, i1) of one sequence into out [i1 - i0, d]. Reads the state, never writes it.
template <typename T, typename A>
void kv_compress_blocks(const KvSequence<T, A>& seq, const KvCompressShape& s, int64_t i0, int64_t i1, A* out,
                        KvCompressWorkspace<A>& ws) {
  const int64_t r = s.ratio, F = s.F, d = s.d();
  for (int64_t i = i0; i < i1; ++i) {
    int64_t n = 0;
    if (s.overlap) {  // first halves of the previous block: the state's for block 0, else block i-1
      const A* pa = seq.kv_state;
      const A* pg = seq.score_state;
      if (i > 0) {
        if (i == i0) seq.block(s, i - 1, ws.prev_a.data(), ws.prev_g.data());
        pa = ws.prev_a.data(), pg = ws.prev_g.data();
      }
      for (int64_t c = 0; c < r; ++c) ws.a_rows[n] = pa + c * F, ws.g_rows[n++] = pg + c * F;
    }
    seq.block(s, i, ws.cur_a.data(), ws.cur_g.data());
    const int64_t half = s.overlap ? d : 0;
    for (int64_t c = 0; c < r; ++c)
      ws.a_rows[n] = ws.cur_a.data() + c * F + half, ws.g_rows[n++] = ws.cur_g.data() + c * F + half;
    pool_channels(ws.a_rows.data(), ws.g_rows.data(), n, d, out + (i - i0) * d, ws.e.data());
    if (s.overlap) std::swap(ws.cur_a, ws.prev_a), std::swap(ws.cur_g, ws.prev_g);
  }
}

// After all blocks of the call are pooled: keeps the last complete block (overlap) and the unfinished one.
template <typename T, typename A>
void kv_compress_update_state(const KvSequence<T, A>& seq, const KvCompressShape& s) {
  const int64_t r = s.ratio, F = s.F, complete = seq.blocks(s), fill = seq.filled(s);
  if (s.overlap && complete > 0) seq.block(s, complete - 1, seq.kv_state, seq.score_state);  // rows [0, r)
  for (int64_t c = std::max(complete * r, fill); c < fill + seq.length; ++c) {
    const int64_t row = s.first() + c % r;
    seq.token(s, c, seq.kv_state + row * F, seq.score_state + row * F);
  }
}

}  // namespace v4k
