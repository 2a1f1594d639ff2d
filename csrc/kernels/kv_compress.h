// Torch-free stateful KV compressor (v4_math.md §3.4): gated softmax pooling of blocks of `ratio` tokens per
// channel, C[f] = sum_j softmax_j(g[j, f]) * a[j, f] with g = score + ape[pos % ratio], and with `overlap`
// (CSA) 2*ratio candidates per channel: the first halves of the previous block and the second halves of
// the current one. The unfinished block (and, with overlap, the previous complete block) lives in the
// per-sequence state, so any split of a sequence into calls gives the same entries.
//
// Blocks are independent once their tokens are known, so a call is a list of (sequence, block) items that
// can run on any thread; the state is updated afterwards, per sequence. An entry's candidates are read in
// the input dtype where they are (kv, score rows and ape) and widened in registers; the softmax runs per
// channel tile (max, then exp, sum and weighted sum) over the candidates with channels innermost: on
// AVX-512 a tile is 4 vectors of peaks, sums and accumulators held in registers, elsewhere (and for fp64)
// a portable body. The fp32 exp is a polynomial (~1-2 ulp), not the one torch uses, so entries agree with
// the reference to a few ulp, not bit for bit.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/dtypes.h"
#include "kernels/exp_avx512.h"
#include "kernels/isa.h"

namespace v4k {

constexpr int64_t kPoolChannels = 64;  // channels per softmax tile (4 AVX-512 vectors)

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

// out[f] = sum_j softmax_j(widen(g[j][f]) + bias[j][f]) * widen(a[j][f]) for f < width, over n candidate
// rows given as pointers already offset to their first channel: the candidates are read in their own
// dtype and widened in registers (no scratch copy). Per tile of channels: one pass for the peak, one that
// sums the exps and the exp-weighted values, then a division by the sum.
template <int64_t W, typename T, typename A>
V4K_INLINE void pool_tile(const T* const* a, const T* const* g, const A* const* bias, int64_t n, int64_t f0,
                          int64_t w, A* out) {
  const int64_t width = W ? W : w;  // a compile-time width for full tiles helps the compiler vectorise
  A peak[kPoolChannels], total[kPoolChannels], acc[kPoolChannels];
  for (int64_t f = 0; f < width; ++f) peak[f] = -std::numeric_limits<A>::infinity(), total[f] = 0, acc[f] = 0;
  for (int64_t j = 0; j < n; ++j) {
    const T* gj = g[j] + f0;
    const A* bj = bias[j] + f0;
    for (int64_t f = 0; f < width; ++f) {
      const A x = widen<A>(gj[f]) + bj[f];
      peak[f] = x > peak[f] ? x : peak[f];
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    const T* gj = g[j] + f0;
    const T* aj = a[j] + f0;
    const A* bj = bias[j] + f0;
    for (int64_t f = 0; f < width; ++f) {
      const A e = softmax_exp((widen<A>(gj[f]) + bj[f]) - peak[f]);
      total[f] += e;
      acc[f] += e * widen<A>(aj[f]);
    }
  }
  for (int64_t f = 0; f < width; ++f) out[f0 + f] = acc[f] / total[f];
}

template <typename T, typename A>
V4K_INLINE void pool_channels_body(const T* const* a, const T* const* g, const A* const* bias, int64_t n,
                                   int64_t width, A* out) {
  int64_t f0 = 0;
  for (; f0 + kPoolChannels <= width; f0 += kPoolChannels) pool_tile<kPoolChannels>(a, g, bias, n, f0, 0, out);
  if (f0 < width) pool_tile<0>(a, g, bias, n, f0, width - f0, out);
}

#define V4K_POOL_CHANNELS(T, A)                                                                                   \
  V4K_DISPATCH(void, pool_channels_portable, (pool_channels_body<T, A>),                                          \
               (const T* const* a, const T* const* g, const A* const* bias, int64_t n, int64_t width, A* out),   \
               (a, g, bias, n, width, out))
V4K_POOL_CHANNELS(float, float)
V4K_POOL_CHANNELS(bf16, float)
V4K_POOL_CHANNELS(_Float16, float)
#undef V4K_POOL_CHANNELS

inline void pool_channels(const double* const* a, const double* const* g, const double* const* bias, int64_t n,
                          int64_t width, double* out) {
  pool_channels_body(a, g, bias, n, width, out);  // fp64 (gradcheck, tests) uses std::exp: nothing to vectorise
}

#if V4K_X86
// The fp32 pooling on AVX-512, the same math as pool_channels_body: the candidates' 16-lane loads widen
// bf16 and fp16 in registers, the peak, sum and weighted sum of a tile of channels stay in registers,
// and the exp is the vector polynomial exp16.
V4K_TARGET_AVX512 V4K_INLINE __m512 load16(const float* p, __mmask16 lanes) { return _mm512_maskz_loadu_ps(lanes, p); }
V4K_TARGET_AVX512 V4K_INLINE __m512 load16(const bf16* p, __mmask16 lanes) {
  const __m512i bits = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
}
V4K_TARGET_AVX512 V4K_INLINE __m512 load16(const _Float16* p, __mmask16 lanes) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lanes, p));
}

// Channels [f0, f0 + 16 V) of the entry; the last vector has only the lanes of `tail`.
template <int V, typename T>
V4K_TARGET_AVX512 V4K_INLINE void pool_vectors_avx512(const T* const* a, const T* const* g, const float* const* bias,
                                                      int64_t n, int64_t f0, __mmask16 tail, float* out) {
  __mmask16 lanes[V];
  __m512 peak[V], total[V], acc[V];
  for (int v = 0; v < V; ++v) {
    lanes[v] = v == V - 1 ? tail : static_cast<__mmask16>(0xFFFF);
    peak[v] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    total[v] = acc[v] = _mm512_setzero_ps();
  }
  // Each pass prefetches what it reads in the next tile of the same rows (prefetches never fault, even past
  // a row's end): the logits in the first pass, the values in the second.
  for (int64_t j = 0; j < n; ++j) {
    for (int v = 0; v < V; ++v) _mm_prefetch(reinterpret_cast<const char*>(g[j] + f0 + 16 * (V + v)), _MM_HINT_T0);
    for (int v = 0; v < V; ++v) {  // max(x, peak) keeps the peak where x is NaN, as x > peak ? x : peak
      const int64_t f = f0 + 16 * v;
      peak[v] = _mm512_max_ps(_mm512_add_ps(load16(g[j] + f, lanes[v]), load16(bias[j] + f, lanes[v])), peak[v]);
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    for (int v = 0; v < V; ++v) _mm_prefetch(reinterpret_cast<const char*>(a[j] + f0 + 16 * (V + v)), _MM_HINT_T0);
    for (int v = 0; v < V; ++v) {
      const int64_t f = f0 + 16 * v;
      const __m512 x = _mm512_add_ps(load16(g[j] + f, lanes[v]), load16(bias[j] + f, lanes[v]));
      const __m512 e = exp16(_mm512_sub_ps(x, peak[v]));
      total[v] = _mm512_add_ps(total[v], e);
      acc[v] = _mm512_fmadd_ps(e, load16(a[j] + f, lanes[v]), acc[v]);
    }
  }
  for (int v = 0; v < V; ++v) _mm512_mask_storeu_ps(out + f0 + 16 * v, lanes[v], _mm512_div_ps(acc[v], total[v]));
}

template <typename T>
V4K_TARGET_AVX512 void pool_channels_avx512(const T* const* a, const T* const* g, const float* const* bias, int64_t n,
                                            int64_t width, float* out) {
  constexpr int kVectors = kPoolChannels / 16;
  int64_t f0 = 0;
  for (; f0 + kPoolChannels <= width; f0 += kPoolChannels)
    pool_vectors_avx512<kVectors>(a, g, bias, n, f0, static_cast<__mmask16>(0xFFFF), out);
  for (; f0 < width; f0 += 16) {
    const int64_t rest = width - f0;
    pool_vectors_avx512<1>(a, g, bias, n, f0, static_cast<__mmask16>(rest >= 16 ? 0xFFFF : (1u << rest) - 1), out);
  }
}
#endif

// Softmax pooling of fp32-accumulated candidates: AVX-512 where the CPU has it, else the portable body.
template <typename T>
inline void pool_channels(const T* const* a, const T* const* g, const float* const* bias, int64_t n, int64_t width,
                          float* out) {
#if V4K_X86
  if (isa() == Isa::avx512) return pool_channels_avx512(a, g, bias, n, width, out);
#endif
  pool_channels_portable(a, g, bias, n, width, out);
}

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

constexpr int64_t kPrefetchBytes = 64 * 1024;  // largest block (kv and score rows) prefetched ahead

// Per-thread buffers of kv_compress_blocks: candidate row pointers, and widened copies of the blocks that
// involve the state. The copies (4 ratio F values: 1 MiB for HCA) are sized on first use, since only a
// call's first entries need them: a prefill from position 0 or a thread's later blocks never touch them.
template <typename T, typename A>
struct KvCompressWorkspace {
  std::vector<A> cur_a, cur_g, prev_a, prev_g, zero;
  std::vector<const T*> a_rows, g_rows;
  std::vector<const A*> wide_a_rows, wide_g_rows, bias_rows, zero_rows;
  explicit KvCompressWorkspace(const KvCompressShape& s)
      : zero(s.F, A(0)), a_rows(2 * s.ratio), g_rows(2 * s.ratio), wide_a_rows(2 * s.ratio),
        wide_g_rows(2 * s.ratio), bias_rows(2 * s.ratio), zero_rows(2 * s.ratio, zero.data()) {}
  void size_widened(const KvCompressShape& s) {
    for (auto* buffer : {&cur_a, &cur_g, &prev_a, &prev_g}) buffer->resize(s.ratio * s.F);
  }
};

// Entries of blocks [i0, i1) of one sequence into out [i1 - i0, d]. Reads the state, never writes it.
// An entry whose candidates are all new rows is pooled straight from kv, score and ape; one with
// candidates in the state (the first entries of a call) from widened copies with the bias already added
// (the state's form), pooled with a zero bias: the same values either way, so entries do not depend on
// how a sequence is split into calls.
template <typename T, typename A>
void kv_compress_blocks(const KvSequence<T, A>& seq, const KvCompressShape& s, int64_t i0, int64_t i1, A* out,
                        KvCompressWorkspace<T, A>& ws) {
  const int64_t r = s.ratio, F = s.F, d = s.d(), fill = seq.filled(s), half = s.overlap ? d : 0;
  // A small block (CSA: 4 rows) is a few short streams that the hardware prefetcher picks up too late, so
  // the next block's rows are requested while this one is pooled. Of a large one (HCA: 512 KiB, which as one
  // burst of prefetches is slower than none) only the first channel tile: pool_channels prefetches each
  // row's next tile itself, but nothing fetches the first one ahead (about 5 % on inputs not in cache).
  const bool whole_rows = 2 * r * F * static_cast<int64_t>(sizeof(T)) <= kPrefetchBytes;
  const int64_t ahead_begin = whole_rows ? 0 : half, ahead_end = whole_rows ? F : std::min(F, half + kPoolChannels);
  constexpr int64_t kLine = 64 / sizeof(T);  // elements per cache line
  for (int64_t i = i0; i < i1; ++i) {
    A* entry = out + (i - i0) * d;
    const int64_t first_block = s.overlap ? i - 1 : i;  // overlap: first halves of the previous block
    int64_t n = 0;
    if (first_block * r >= fill) {
      for (int64_t b = first_block; b <= i; ++b) {
        const int64_t offset = b == i ? half : 0;
        for (int64_t c = b * r; c < (b + 1) * r; ++c) {
          ws.a_rows[n] = seq.kv + (c - fill) * F + offset;
          ws.g_rows[n] = seq.score + (c - fill) * F + offset;
          ws.bias_rows[n++] = seq.ape + (c % r) * F + offset;
        }
      }
      for (int64_t c = (i + 1) * r; c < std::min((i + 2) * r, fill + seq.length); ++c)
        for (int64_t f = ahead_begin; f < ahead_end; f += kLine)
          __builtin_prefetch(seq.kv + (c - fill) * F + f), __builtin_prefetch(seq.score + (c - fill) * F + f);
      pool_channels(ws.a_rows.data(), ws.g_rows.data(), ws.bias_rows.data(), n, d, entry);
      continue;
    }
    ws.size_widened(s);
    if (s.overlap) {  // the state's first rows hold the block before the call's first one
      const A* pa = seq.kv_state;
      const A* pg = seq.score_state;
      if (i > 0) {
        seq.block(s, i - 1, ws.prev_a.data(), ws.prev_g.data());
        pa = ws.prev_a.data(), pg = ws.prev_g.data();
      }
      for (int64_t c = 0; c < r; ++c) ws.wide_a_rows[n] = pa + c * F, ws.wide_g_rows[n++] = pg + c * F;
    }
    seq.block(s, i, ws.cur_a.data(), ws.cur_g.data());
    for (int64_t c = 0; c < r; ++c)
      ws.wide_a_rows[n] = ws.cur_a.data() + c * F + half, ws.wide_g_rows[n++] = ws.cur_g.data() + c * F + half;
    pool_channels(ws.wide_a_rows.data(), ws.wide_g_rows.data(), ws.zero_rows.data(), n, d, entry);
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
