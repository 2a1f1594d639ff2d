// Torch-free scalar types shared by the CPU kernels: bf16 storage with round-to-nearest-even.
#pragma once
#include <cstdint>
#include <cstring>

namespace v4k {

// Layout-compatible with c10::BFloat16 (one uint16_t holding the high half of an IEEE float).
struct bf16 {
  uint16_t bits;
};

inline float to_float(float x) { return x; }
inline float to_float(double x) { return static_cast<float>(x); }
inline float to_float(bf16 x) {
  uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float to_float(_Float16 x) { return static_cast<float>(x); }

template <typename T>
inline T from_float(float x);
template <>
inline float from_float<float>(float x) { return x; }
template <>
inline _Float16 from_float<_Float16>(float x) { return static_cast<_Float16>(x); }
template <>
inline bf16 from_float<bf16>(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // round to nearest even
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  // A select rather than an early return, so that loops converting to bf16 vectorise.
  return bf16{static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded)};
}

// Accumulation type: fp32, or fp64 for fp64 data (so that gradcheck sees a precise forward).
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

template <typename A, typename T>
inline A widen(T x) {
  return static_cast<A>(to_float(x));
}
template <>
inline double widen<double, double>(double x) { return x; }

template <typename T, typename A>
inline T narrow(A x) {
  return from_float<T>(static_cast<float>(x));
}
template <>
inline double narrow<double, double>(double x) { return x; }

}  // namespace v4k
