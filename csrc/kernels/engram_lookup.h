// Torch-free Engram table lookup (v4_math.md §5): gathers table rows (-1 = a row of zeros) and converts
// them to the output type, dequantising FP8 e4m3 rows as fp32(q) * scale[r, c / 32] in fp32 on the way.
// Rows are read only where the index points, so the table may be memory-mapped; the rows a few steps
// ahead are prefetched, because a random-row gather is bound by memory latency, not bandwidth. The row
// sources and gather_row are shared with the fused hash + lookup (engram_hash_lookup.h).
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
};

// The empty volatile asm keeps the loop: GCC 12 deleted a loop of nothing but prefetches over a run-time
// byte count (as side-effect free, under C++'s -ffinite-loops), which silently turned off the FP8 prefetch.
inline void prefetch_row(const void* row, int64_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (int64_t b = 0; b < bytes; b += 64) {
    __builtin_prefetch(p + b, 0, 0);
    asm volatile("");
  }
}

// Index of the first row in [begin, end) outside [-1, R), or -1 when all are valid.
inline int64_t engram_first_bad_row(const int64_t* rows, int64_t begin, int64_t end, int64_t R) {
  for (int64_t i = begin; i < end; ++i)
    if (rows[i] < -1 || rows[i] >= R) return i;
  return -1;
}

// One value converted per channel; the compiler vectorises the loop for the float formats.
template <typename In, typename Out>
inline void convert_row(const In* src, int64_t E, Out* dst) {
  if constexpr (std::is_same_v<In, Out>) {
    std::memcpy(dst, src, E * sizeof(Out));
  } else {
    for (int64_t c = 0; c < E; ++c) dst[c] = convert<Out>(src[c]);
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

// Row sources of the gathers: prefetch(r) starts loading row r, copy(r, dst) writes row r (r >= 0)
// converted to Out. One object per thread (the FP8 source keeps a scratch row of scales).
template <typename In, typename Out>
struct FloatTableRows {
  const In* table;
  int64_t E;

  void prefetch(int64_t r) const { prefetch_row(table + r * E, E * static_cast<int64_t>(sizeof(In))); }
  void copy(int64_t r, Out* dst) const { convert_row(table + r * E, E, dst); }
};

// FP8 e4m3 rows dequantised as fp32(q) * scale[r, c / 32] (one fp32 product, as the reference).
template <typename Out>
struct Fp8TableRows {
  Fp8TableRows(const uint8_t* table, const Fp8Scales& scales, int64_t E)
      : table(table), scales(scales), E(E), blocks(E / kFp8Block), ue8m0_scratch(scales.ue8m0 ? blocks : 0) {}

  void prefetch(int64_t r) const {
    prefetch_row(table + r * E, E);
    if (scales.ue8m0)
      prefetch_row(scales.ue8m0 + r * blocks, blocks);
    else
      prefetch_row(scales.fp32 + r * blocks, blocks * static_cast<int64_t>(sizeof(float)));
  }

  void copy(int64_t r, Out* dst) {
    const float* scale = scales.fp32 ? scales.fp32 + r * blocks : ue8m0_scratch.data();
    if (scales.ue8m0)
      for (int64_t b = 0; b < blocks; ++b) ue8m0_scratch[b] = ue8m0_values()[scales.ue8m0[r * blocks + b]];
    dequant_row(table + r * E, scale, blocks, dst);
  }

  const uint8_t* table;
  Fp8Scales scales;
  int64_t E, blocks;
  std::vector<float> ue8m0_scratch;
};

// Row r of a gather, or zeros for r < 0 (-1 = no row).
template <typename Rows, typename Out>
inline void gather_row(Rows& source, int64_t r, int64_t E, Out* dst) {
  if (r < 0)
    std::memset(static_cast<void*>(dst), 0, E * sizeof(Out));
  else
    source.copy(r, dst);
}

// out[i, :] = row rows[i] of `source`, for i in [begin, end); rows must be in [-1, R).
template <typename Rows, typename Out>
void engram_gather(Rows& source, int64_t E, const int64_t* rows, int64_t begin, int64_t end, Out* out) {
  for (int64_t i = begin; i < end; ++i) {
    if (i + kPrefetchRows < end && rows[i + kPrefetchRows] >= 0) source.prefetch(rows[i + kPrefetchRows]);
    gather_row(source, rows[i], E, out + i * E);
  }
}

}  // namespace v4k
