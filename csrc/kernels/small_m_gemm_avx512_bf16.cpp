// AVX512-BF16 small-M GEMM body: vdpbf16ps multiplies bf16 pairs of x and w (adjacent columns, which is
// how both are stored) and adds both products to an fp32 lane, so no operand is widened or reordered.
#include <immintrin.h>

#include <cstdint>

#include "kernels/dtypes.h"
#include "kernels/small_m_gemm.h"

// Every header is included above, so the target below applies to this file's own functions only.
#pragma GCC target("avx512f,avx512bw,avx512vl,fma,avx512bf16")
#include "kernels/small_m_gemm_avx512_blocks.h"

namespace v4k::gemm::avx512 {
namespace {

struct Bf16Dot {
  using T = bf16;
  using Vec = __m512bh;
  static constexpr int64_t kStep = 32;
  static Vec load(const bf16* p) { return (__m512bh)_mm512_loadu_si512(p); }
  static Vec load_tail(const bf16* p, int64_t n) {
    return (__m512bh)_mm512_maskz_loadu_epi16((__mmask32)((uint64_t{1} << n) - 1), p);
  }
  static __m512 madd(__m512 acc, Vec a, Vec b) { return _mm512_dpbf16_ps(acc, a, b); }
};

}  // namespace

void run_bf16_dot(SmallM<bf16> p) { run<Bf16Dot>(p); }

}  // namespace v4k::gemm::avx512
