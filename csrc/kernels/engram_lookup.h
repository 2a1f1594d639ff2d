// Torch-free Engram table lookup (v4_math.md §5): gathers table rows (-1 = a row of zeros) and converts
// them to the output type, dequantising FP8 e4m3 rows as fp32(q) * scale[r, c / 32] in fp32 on the way.
// Rows are read only where the index points, so the table may be memory-mapped; the rows a few steps
// ahead are prefetched, because a random-row gather is bound by memory latency, not bandwidth.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/dtypes.h"
#include "kernels/isa.h"

namespace v4k {

constexpr int64_t kFp8Block = 32;     // channels per FP8 block scale
constexpr int64_t kPrefetchRows = 16;  // rows prefetched ahead of the one being converted

// FP8 e4m3fn byte -> float (bias 7, subnormals, 0x7f / 0xff = NaN, no infinities) by integer arithmetic
// and masks (no branches or selects on floats), so that a row converts in vector lanes.
V4K_INLINE float e4m3_to_float(uint8_t byte) {
  const uint32_t b = byte, sign = (b & 0x80u) << 24, exponent = (b >> 3) & 15u, mantissa = b & 7u;
  const uint32_t normal = sign | ((exponent + 120u) << 23) | (mantissa << 20);
  const float subnormal_value = static_cast<float>(static_cast<int32_t>(mantissa)) * 0x1p-9f;
  uint32_t subnormal;
  std::memcpy(&subnormal, &subnormal_value, sizeof subnormal);
  subnormal |= sign;
  const uint32_t is_subnormal = 0u - static_cast<uint32_t>(exponent == 0);
  const uint32_t is_nan = 0u - static_cast<uint32_t>((b & 0x7fu) == 0x7fu);
  const uint32_t bits =
      (is_nan & 0x7fc00000u) | (~is_nan & ((is_subnormal & subnormal) | (~is_subnormal & normal)));
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// UE8M0 exponent byte -> float 2^(e - 127), 255 = NaN.
struct Ue8m0Table {
  float value[256];
  Ue8m0Table() {
    for (int e = 0; e < 256; ++e)
      value[e] = e == 255 ? std::numeric_limits<float>::quiet_NaN() : std::ldexp(1.0f, e - 127);
  }
};

inline const float* ue8m0_values() {
  static const Ue8m0Table table;
  return table.value;
}

// One value converted as torch's .to(dtype) does: exact widening, rounding to nearest even when narrowing.
template <typename Out, typename In>
inline Out convert(In x) {
  if constexpr (std::is_same_v<Out, In>) {
    return x;
  } else if constexpr (std::is_same_v<Out, double>) {
    return static_cast<double>(to_float(x));
  } else {
    return from_float<Out>(to_float(x));
  }
}

// Block scales of an FP8 table: UE8M0 bytes or fp32 values, [R, E / 32].
struct Fp8Scales {
  const uint8_t* ue8m0 = nullptr;
  const float* fp32 = nullptr;
  float at(int64_t i) const { return ue8m0 ? ue8m0_values()[ue8m0[i]] : fp32[i]; }
};

inline void prefetch_row(const void* row, int64_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b, 0, 0);
}

// Index of the first row in [begin, end) outside [-1, R), or -1 when all are valid.
inline int64_t engram_first_bad_row(const int64_t* rows, int64_t begin, int64_t end, int64_t R) {
  for (int64_t i = begin; i < end; ++i)
    if (rows[i] < -1 || rows[i] >= R) return i;
  return -1;
}

// out[i, :] = table[rows[i], :] converted to Out, for i in [begin, end); rows must be in [-1, R).
template <typename In, typename Out>
void engram_gather(const In* table, int64_t E, const int64_t* rows, int64_t begin, int64_t end, Out* out) {
  for (int64_t i = begin; i < end; ++i) {
    if (i + kPrefetchRows < end && rows[i + kPrefetchRows] >= 0)
      prefetch_row(table + rows[i + kPrefetchRows] * E, E * static_cast<int64_t>(sizeof(In)));
    Out* dst = out + i * E;
    if (rows[i] < 0) {
      std::memset(static_cast<void*>(dst), 0, E * sizeof(Out));
    } else if constexpr (std::is_same_v<In, Out>) {
      std::memcpy(dst, table + rows[i] * E, E * sizeof(Out));
    } else {
      const In* src = table + rows[i] * E;
      for (int64_t c = 0; c < E; ++c) dst[c] = convert<Out>(src[c]);
    }
  }
}

// One row of FP8 codes, block b times scale[b] (one fp32 product, as the reference), converted to Out.
template <typename Out>
V4K_INLINE void dequant_row_body(const uint8_t* src, const float* scale, int64_t blocks, Out* dst) {
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t c = b * kFp8Block; c < (b + 1) * kFp8Block; ++c)
      dst[c] = convert<Out>(e4m3_to_float(src[c]) * scale[b]);
}

#define V4K_DEQUANT(Out)                                                                                   \
  V4K_DISPATCH(void, dequant_row, dequant_row_body<Out>,                                                   \
               (const uint8_t* src, const float* scale, int64_t blocks, Out* dst), (src, scale, blocks, dst))
V4K_DEQUANT(float)
V4K_DEQUANT(double)
V4K_DEQUANT(bf16)
V4K_DEQUANT(_Float16)
#undef V4K_DEQUANT

// FP8 e4m3 rows dequantised as fp32(q) * scale (one fp32 product, as the reference) and converted to Out.
template <typename Out>
void engram_gather_fp8(const uint8_t* table, const Fp8Scales& scales, int64_t E, const int64_t* rows, int64_t begin,
                       int64_t end, Out* out) {
  const int64_t blocks = E / kFp8Block;
  const int64_t scale_bytes = blocks * (scales.ue8m0 ? 1 : static_cast<int64_t>(sizeof(float)));
  std::vector<float> scale(blocks);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t ahead = i + kPrefetchRows < end ? rows[i + kPrefetchRows] : -1;
    if (ahead >= 0) {
      prefetch_row(table + ahead * E, E);
      prefetch_row(scales.ue8m0 ? static_cast<const void*>(scales.ue8m0 + ahead * blocks)
                                : static_cast<const void*>(scales.fp32 + ahead * blocks),
                   scale_bytes);
    }
    Out* dst = out + i * E;
    if (rows[i] < 0) {
      std::memset(static_cast<void*>(dst), 0, E * sizeof(Out));
      continue;
    }
    for (int64_t b = 0; b < blocks; ++b) scale[b] = scales.at(rows[i] * blocks + b);
    dequant_row(table + rows[i] * E, scale.data(), blocks, dst);
  }
}

}  // namespace v4k
