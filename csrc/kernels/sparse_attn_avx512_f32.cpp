// fp32 AVX-512 sparse attention: FMA dot products for the logits, broadcast FMAs for PV.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/softmax_sink.h"
#include "kernels/sparse_attn_avx512.h"

// Every header is included above, so the target below applies to this file's own functions only.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
#include "kernels/sparse_attn_avx512_blocks.h"

namespace v4k::avx512 {
namespace {

// acc [TH heads, VECS * 16 columns from c0] += probs [TH, valid] x block [valid, same columns].
template <int TH, int VECS>
struct PvTile {
  static void run(int64_t h, int64_t c0, const Workspace* ws, const float* const* block, int64_t valid, int64_t dim) {
    float* acc = ws->acc + h * dim + c0;
    const float* probs = ws->probs + h * kBlock;
    __m512 a[TH][VECS];
    for (int i = 0; i < TH; ++i)
      for (int j = 0; j < VECS; ++j) a[i][j] = _mm512_loadu_ps(acc + i * dim + 16 * j);
    for (int64_t b = 0; b < valid; ++b) {
      __m512 r[VECS];
      for (int j = 0; j < VECS; ++j) r[j] = _mm512_loadu_ps(block[b] + c0 + 16 * j);
      for (int i = 0; i < TH; ++i) {
        const __m512 p = _mm512_set1_ps(probs[i * kBlock + b]);
        for (int j = 0; j < VECS; ++j) a[i][j] = _mm512_fmadd_ps(p, r[j], a[i][j]);
      }
    }
    for (int i = 0; i < TH; ++i)
      for (int j = 0; j < VECS; ++j) _mm512_storeu_ps(acc + i * dim + 16 * j, a[i][j]);
  }
};

struct F32 {
  using T = float;
  static constexpr int kStep = 16;
  static __m512 dot(__m512 acc, const float* a, const float* b) {
    return _mm512_fmadd_ps(_mm512_loadu_ps(a), _mm512_loadu_ps(b), acc);
  }
  static __m512 store_probs(const Workspace& ws, int64_t at, __m512 p0, __m512 p1) {
    _mm512_storeu_ps(ws.probs + at, p0);
    _mm512_storeu_ps(ws.probs + at + 16, p1);
    return _mm512_add_ps(p0, p1);
  }
  static void accumulate(const Workspace& ws, const float* const* block, int64_t valid, int64_t heads, int64_t dim) {
    over_tiles<PvTile>(heads, dim, &ws, block, valid, dim);
  }
  static void store_out(float* out, const float* acc, __m512 factor, int64_t dim) {
    for (int64_t c = 0; c < dim; c += 16) _mm512_storeu_ps(out + c, _mm512_mul_ps(_mm512_loadu_ps(acc + c), factor));
  }
};

}  // namespace

void attend_f32(const float* q, const float* const* rows, int64_t n_rows, const float* sink, int64_t heads,
                int64_t dim, float scale, float* out, float* lse, const Workspace& ws) {
  attend<F32>(q, rows, n_rows, sink, heads, dim, scale, out, lse, ws);
}

}  // namespace v4k::avx512
