// AVX-512 small-M GEMM bodies for fp32 and for bf16 widened to fp32 (CPUs without AVX512-BF16).
#include <immintrin.h>

#include <cstdint>

#include "kernels/dtypes.h"
#include "kernels/small_m_gemm.h"

// Every header is included above, so the target below applies to this file's own functions only.
#pragma GCC target("avx512f,avx512bw,avx512vl,fma")
#include "kernels/small_m_gemm_avx512_blocks.h"

namespace v4k::gemm::avx512 {
namespace {

struct F32 {
  using T = float;
  using Vec = __m512;
  static constexpr int64_t kStep = 16;
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec load_tail(const float* p, int64_t n) { return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p); }
  static __m512 madd(__m512 acc, Vec a, Vec b) { return _mm512_fmadd_ps(a, b, acc); }
};

// bf16 is the high half of an fp32: zero-extend to 32 bits and shift into place.
struct Bf16Widened {
  using T = bf16;
  using Vec = __m512;
  static constexpr int64_t kStep = 16;
  static Vec widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static Vec load(const bf16* p) { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static Vec load_tail(const bf16* p, int64_t n) {
    return widen(_mm256_maskz_loadu_epi16((__mmask16)((1u << n) - 1), p));
  }
  static __m512 madd(__m512 acc, Vec a, Vec b) { return _mm512_fmadd_ps(a, b, acc); }
};

}  // namespace

void run_f32(SmallM<float> p) { run<F32>(p); }
void run_bf16_widened(SmallM<bf16> p) { run<Bf16Widened>(p); }

}  // namespace v4k::gemm::avx512
