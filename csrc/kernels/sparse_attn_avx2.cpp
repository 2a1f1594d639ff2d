// AVX2 + FMA sparse attention: fp32, and bf16 widened to fp32 on load (AVX2 has no bf16 products);
// the same blocks as the AVX-512 kernels on 8-lane vectors.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/softmax_sink.h"
#include "kernels/sparse_attn_simd.h"

// Every header is included above, so the target below applies to this file's own functions only.
#pragma GCC target("avx2,fma")
#include "kernels/sparse_attn_simd_blocks.h"

namespace v4k::avx2 {

void attend_f32(const float* q, const float* const* rows, int64_t n_rows, const float* sink, int64_t heads,
                int64_t dim, float scale, float* out, float* lse, const simd::Workspace& ws) {
  simd::attend<simd::Widening<simd::Avx2, float>>(q, rows, n_rows, sink, heads, dim, scale, out, lse, ws);
}

void attend_bf16(const uint16_t* q, const uint16_t* const* rows, int64_t n_rows, const float* sink, int64_t heads,
                 int64_t dim, float scale, uint16_t* out, float* lse, const simd::Workspace& ws) {
  simd::attend<simd::Widening<simd::Avx2, uint16_t>>(q, rows, n_rows, sink, heads, dim, scale, out, lse, ws);
}

}  // namespace v4k::avx2
