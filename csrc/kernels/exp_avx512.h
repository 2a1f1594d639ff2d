// exp on 16 fp32 lanes for the AVX-512 softmax loops (sparse attention, KV compressor): callable from
// functions compiled for AVX-512 (V4K_TARGET_AVX512, or a translation unit's AVX-512 target pragma).
#pragma once
#include "kernels/isa.h"

#if V4K_X86
#include <immintrin.h>

namespace v4k {

// 2^n * p(r) with x = n ln2 + r, |r| <= ln2 / 2, degree-6 polynomial (~1 ulp); -inf and very negative
// inputs give exactly 0, NaN stays NaN (the clamps take x as their second operand, which min/max return
// when one operand is NaN).
V4K_TARGET_AVX512 V4K_INLINE __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.7f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

}  // namespace v4k
#endif
