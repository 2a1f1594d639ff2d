// fp32 AVX-512 sparse attention: FMA dot products for the logits, broadcast FMAs for PV.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/exp_avx512.h"
#include "kernels/softmax_sink.h"
#include "kernels/sparse_attn_simd.h"

// Every header is included above, so the target below applies to this file's own functions only.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#define V4K_SIMD_AVX512
#include "kernels/sparse_attn_simd_blocks.h"

namespace v4k::avx512 {

void attend_f32(const float* q, const float* const* rows, int64_t n_rows, const float* sink, int64_t heads,
                int64_t dim, float scale, float* out, float* lse, const simd::Workspace& ws) {
  simd::attend<simd::Widening<simd::Avx512, float>>(q, rows, n_rows, sink, heads, dim, scale, out, lse, ws);
}

}  // namespace v4k::avx512
