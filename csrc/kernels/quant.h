// Torch-free rows of the quantisation family, bit-exact with v4_ascend.reference.quant: FP8 e4m3 and
// FP4 e2m1 quantisation and fake-quantisation with UE8M0 block scales (fp32 math whatever the storage
// type) and the Walsh-Hadamard rotation by butterflies in the reference's add order. The e4m3 / UE8M0
// rules are the MoE kernel's (moe_quant.h), so both families round identically.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/dtypes.h"
#include "kernels/moe_quant.h"

namespace v4k::quant {

constexpr float kFp4Max = 6.0f;
constexpr float kFp4AmaxFloor = 6.0f * 0x1p-126f;

using moe::fp8_fake_quant_row;

// e2m1 nibble (sign << 3 | magnitude code) of v, already scaled and clamped to +-6: round to nearest,
// ties to the even code (0.75, 1.75 and 3.5 round up, 0.25, 1.25, 2.5 and 5 down); NaN gives code 0,
// and the sign of a value that rounds to zero is kept.
inline uint8_t e2m1_code(float v) {
  const float m = std::fabs(v);
  const int code = (m > 0.25f) + (m >= 0.75f) + (m > 1.25f) + (m >= 1.75f) + (m > 2.5f) + (m >= 3.5f) + (m > 5.0f);
  return static_cast<uint8_t>(code | (std::signbit(v) << 3));
}

// FP4 fake-quantisation of one row of K values (K a multiple of block) in fp32, as
// fp4_dequant(*fp4_quant(x, block)): per block scale = pow2_ceil(max(amax, 6 * 2^-126) / 6).
// `in` and `out` may alias.
template <typename T>
void fp4_fake_quant_row(const T* in, T* out, int64_t K, int64_t block) {
  for (int64_t b = 0; b < K; b += block) {
    const float scale = moe::block_scale(moe::abs_max(in + b, block), kFp4AmaxFloor, kFp4Max);
    for (int64_t i = b; i < b + block; ++i) {
      const float q = moe::clamp(to_float(in[i]) / scale, -kFp4Max, kFp4Max);
      out[i] = moe::store<T>(moe::e2m1_value(e2m1_code(q)) * scale);
    }
  }
}

// float8_e4m3fn byte of r, a value e4m3_round gave (NaN: 0x7f with r's sign).
inline uint8_t e4m3_code(float r) {
  const uint32_t u = moe::float_to_bits(r);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const float a = std::fabs(r);
  if (a != a) return sign | 0x7f;
  if (a < 0x1p-6f) return sign | static_cast<uint8_t>(a * 512.0f);  // subnormal: a multiple of 2^-9
  const uint32_t exponent = ((u >> 23) & 0xffu) - 127u + 7u, mantissa = (u >> 20) & 7u;
  return sign | static_cast<uint8_t>(exponent << 3 | mantissa);
}

// fp8_quant of one row of K values (K a multiple of block): e4m3 bytes `q` and one fp32 UE8M0 scale
// per block, as fp8_fake_quant_row computes them.
template <typename T>
void fp8_quant_row(const T* in, uint8_t* q, float* scale, int64_t K, int64_t block) {
  for (int64_t b = 0; b < K; b += block) {
    const float s = moe::block_scale(moe::abs_max(in + b, block), moe::kFp8AmaxFloor, moe::kFp8Max);
    scale[b / block] = s;
    for (int64_t i = b; i < b + block; ++i)
      q[i] = e4m3_code(moe::e4m3_round(moe::clamp(to_float(in[i]) / s, -moe::kFp8Max, moe::kFp8Max)));
  }
}

// fp4_quant of one row of K values (K a multiple of the even block): e2m1 nibbles packed two per byte
// (element 2i in the low nibble of byte i) and one fp32 UE8M0 scale per block.
template <typename T>
void fp4_quant_row(const T* in, uint8_t* packed, float* scale, int64_t K, int64_t block) {
  for (int64_t b = 0; b < K; b += block) {
    const float s = moe::block_scale(moe::abs_max(in + b, block), kFp4AmaxFloor, kFp4Max);
    scale[b / block] = s;
    for (int64_t i = b; i < b + block; i += 2) {
      const uint8_t lo = e2m1_code(moe::clamp(to_float(in[i]) / s, -kFp4Max, kFp4Max));
      const uint8_t hi = e2m1_code(moe::clamp(to_float(in[i + 1]) / s, -kFp4Max, kFp4Max));
      packed[i / 2] = static_cast<uint8_t>(lo | hi << 4);
    }
  }
}

// Walsh-Hadamard rotation of one row of n values (n a power of two) in A (fp32, or fp64 for fp64
// data) as the reference: stage h = 1, 2, 4, ... replaces each pair (a, b) h apart by (a + b, a - b),
// then one multiply by `norm` (1/sqrt(n) rounded to A). `work` holds n values of A.
template <typename T, typename A>
void hadamard_row(const T* in, T* out, int64_t n, A norm, A* work) {
  for (int64_t i = 0; i < n; ++i) work[i] = widen<A>(in[i]);
  for (int64_t half = 1; half < n; half *= 2) {
    for (int64_t start = 0; start < n; start += 2 * half) {
      A* lo = work + start;
      A* hi = lo + half;
      for (int64_t i = 0; i < half; ++i) {
        const A a = lo[i], b = hi[i];
        lo[i] = a + b;
        hi[i] = a - b;
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) out[i] = narrow<T>(work[i] * norm);
}

}  // namespace v4k::quant
