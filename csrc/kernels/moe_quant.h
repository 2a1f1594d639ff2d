// Torch-free FP8/FP4 helpers of the MoE FFN kernel, bit-exact with v4_ascend.reference.quant:
// UE8M0 scales, e4m3 and e2m1 codes, 128x128 FP8 / 1xB FP4 weight dequantisation and the FP8 1x128
// activation fake-quantisation that V4's Linear applies before an FP8/FP4 GEMM.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/dtypes.h"

namespace v4k::moe {

constexpr float kFp8Max = 448.0f;
constexpr float kFp8AmaxFloor = 1e-4f;

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// A float or double rounded to storage type T (bf16, _Float16, float or double).
template <typename T, typename V>
inline T store(V v) {
  if constexpr (std::is_same_v<T, V> || std::is_same_v<T, double>) {
    return static_cast<T>(v);
  } else {
    return from_float<T>(static_cast<float>(v));
  }
}

// The value of a UE8M0 byte: 2^(b - 127); 0 is the subnormal 2^-127 and 255 is NaN (as float8_e8m0fnu).
inline float ue8m0_scale(uint8_t b) {
  if (b == 255) return bits_to_float(0x7fc00000u);
  return bits_to_float(b == 0 ? 0x00400000u : static_cast<uint32_t>(b) << 23);
}

// 2^ceil(log2(a)) for positive normal a, by the exponent bits (as V4).
inline float pow2_ceil(float a) {
  const uint32_t u = float_to_bits(a);
  const uint32_t biased = ((u >> 23) & 0xffu) + ((u & 0x7fffffu) != 0);
  return bits_to_float(biased << 23);
}

// The 256 values of float8_e4m3fn codes (no infinities; 0x7f / 0xff are NaN).
inline const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) {
      const int e = (c >> 3) & 0xf, m = c & 7;
      float v = e == 0 ? std::ldexp(static_cast<float>(m), -9) : std::ldexp(1.0f + m / 8.0f, e - 7);
      if (e == 0xf && m == 7) v = bits_to_float(0x7fc00000u);
      t[c] = (c & 0x80) ? -v : v;
    }
    return t;
  }();
  return table;
}

// v (already within +-448) rounded to the nearest e4m3 value, ties to even, the sign of zero kept.
inline float e4m3_round(float v) {
  const float a = std::fabs(v);
  if (!(a >= 0x1p-6f)) {  // subnormal codes are multiples of 2^-9 (NaN passes through)
    if (a != a) return v;
    return std::copysign(std::nearbyint(a * 512.0f) * 0x1p-9f, v);
  }
  uint32_t u = float_to_bits(v);
  u += 0x7ffffu + ((u >> 20) & 1u);  // keep 3 mantissa bits, round to nearest even
  return bits_to_float(u & 0xfff00000u);
}

// e2m1 magnitudes by code 0..7; bit 3 is the sign.
inline float e2m1_value(uint8_t nibble) {
  static constexpr float kGrid[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float m = kGrid[nibble & 7];
  return (nibble & 8) ? -m : m;
}

// max(|x|) over n values as torch.amax: a NaN anywhere gives NaN.
template <typename T>
inline float abs_max(const T* x, int64_t n) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(to_float(x[i]));
    amax = (a > amax || a != a) ? a : amax;
  }
  return amax;
}

// v limited to [lo, hi] as torch.clamp: NaN passes through (std::fmin/fmax would drop it).
inline float clamp(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// The UE8M0 scale of a block: pow2_ceil(max(amax, floor) / max_code), NaN-propagating like torch.clamp.
inline float block_scale(float amax, float floor, float max_code) {
  return pow2_ceil((amax < floor ? floor : amax) / max_code);
}

// FP8 fake-quantisation of one row of K values (K a multiple of block) in fp32, as
// fp8_dequant(*fp8_quant(x, block)): per block scale = pow2_ceil(max(amax, 1e-4) / 448).
// `in` and `out` may alias.
template <typename T>
void fp8_fake_quant_row(const T* in, T* out, int64_t K, int64_t block) {
  for (int64_t b = 0; b < K; b += block) {
    const float scale = block_scale(abs_max(in + b, block), kFp8AmaxFloor, kFp8Max);
    for (int64_t i = b; i < b + block; ++i) {
      const float q = clamp(to_float(in[i]) / scale, -kFp8Max, kFp8Max);
      out[i] = store<T>(e4m3_round(q) * scale);
    }
  }
}

// e2m1 values of both nibbles of every byte: element 2i (low nibble) first.
inline const std::array<std::array<float, 2>, 256>& e2m1_pair_table() {
  static const std::array<std::array<float, 2>, 256> table = [] {
    std::array<std::array<float, 2>, 256> t{};
    for (int b = 0; b < 256; ++b) t[b] = {e2m1_value(b & 0xf), e2m1_value(b >> 4)};
    return t;
  }();
  return table;
}

// One row of K e4m3 codes times its fp32 block scales (one per `block` columns), widened to A: the
// code * scale product is formed in fp32 as the reference's dequantisation.
template <typename A>
void fp8_dequant_row(const uint8_t* q, const float* scale, int64_t K, int64_t block, A* out) {
  const auto& value = e4m3_table();
  for (int64_t b = 0, k = 0; k < K; ++b) {
    const float s = scale[b];
    for (const int64_t end = std::min(K, k + block); k < end; ++k) out[k] = static_cast<A>(value[q[k]] * s);
  }
}

// One row of K packed e2m1 values (element 2i in the low nibble of byte i; `block` even) times its
// fp32 scales, widened to A.
template <typename A>
void fp4_dequant_row(const uint8_t* packed, const float* scale, int64_t K, int64_t block, A* out) {
  const auto& pair = e2m1_pair_table();
  for (int64_t b = 0, k = 0; k < K; ++b) {
    const float s = scale[b];
    for (const int64_t end = k + block; k < end; k += 2) {
      const auto& v = pair[packed[k / 2]];
      out[k] = static_cast<A>(v[0] * s);
      out[k + 1] = static_cast<A>(v[1] * s);
    }
  }
}

// Row n of an e4m3 [N, K] weight with block scales [ceil(N/block), ceil(K/block)], dequantised.
template <typename A>
void fp8_weight_row(const uint8_t* q, const float* scale, int64_t K, int64_t block, int64_t n, A* out) {
  fp8_dequant_row(q + n * K, scale + (n / block) * ((K + block - 1) / block), K, block, out);
}

// Row n of a packed e2m1 [N, K/2] weight with scales [N, K/block], dequantised.
template <typename A>
void fp4_weight_row(const uint8_t* packed, const float* scale, int64_t K, int64_t block, int64_t n, A* out) {
  fp4_dequant_row(packed + n * (K / 2), scale + n * (K / block), K, block, out);
}

}  // namespace v4k::moe
