// Unit tests of the torch-free kernel cores that need no tensor library: scalar conversions.
// Numerics of whole kernels are tested from Python against the references.
#include <cmath>
#include <cstdio>
#include <cstring>

#include "kernels/dtypes.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what);
    ++failures;
  }
}

float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

void bf16_rounds_to_nearest_even() {
  using v4k::bf16;
  using v4k::from_float;
  // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to the even mantissa, 1.
  expect(from_float<bf16>(1.0f + 0x1p-8f).bits == 0x3f80, "tie 1 + 2^-8 rounds down to even");
  // 1 + 3 * 2^-8 lies between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up to even.
  expect(from_float<bf16>(1.0f + 3 * 0x1p-8f).bits == 0x3f82, "tie 1 + 3*2^-8 rounds up to even");
  expect(from_float<bf16>(1.0f + 0x1p-8f + 0x1p-20f).bits == 0x3f81, "above the tie rounds up");
  expect(v4k::to_float(bf16{0xc040}) == -3.0f, "0xc040 is -3");
  expect(from_float<bf16>(-0.0f).bits == 0x8000, "negative zero keeps its sign");
  expect(std::isnan(v4k::to_float(from_float<bf16>(from_bits(0x7fc00001)))), "NaN stays NaN");
  expect(from_float<bf16>(from_bits(0x7f7fffff)).bits == 0x7f80, "float max rounds to +inf");
}

void widen_and_narrow_keep_doubles_exact() {
  const double third = 1.0 / 3.0;
  expect(v4k::widen<double>(third) == third, "widen<double>(double) is exact");
  expect(v4k::narrow<double, double>(third) == third, "narrow<double>(double) is exact");
  expect(v4k::widen<float>(v4k::bf16{0x3f80}) == 1.0f, "bf16 1.0 widens to 1.0f");
}

}  // namespace

int main() {
  bf16_rounds_to_nearest_even();
  widen_and_narrow_keep_doubles_exact();
  std::printf("%s\n", failures ? "kernel unit tests FAILED" : "kernel unit tests passed");
  return failures ? 1 : 0;
}
