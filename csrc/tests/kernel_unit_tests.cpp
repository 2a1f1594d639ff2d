// Unit tests of the torch-free kernel cores that need no tensor library: scalar conversions and codes,
// and every ISA body of the small-M GEMM this CPU can run (the Python tests reach only the dispatched one).
// Numerics of whole kernels are tested from Python against the references.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/dtypes.h"
#include "kernels/engram_hash.h"
#include "kernels/engram_hash_lookup.h"
#include "kernels/isa.h"
#include "kernels/quant.h"
#include "kernels/small_m_gemm.h"

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

void e4m3_codes_round_trip() {
  // Every non-NaN e4m3 byte is the code of its own value (this covers subnormals and -0).
  const auto& value = v4k::moe::e4m3_table();
  bool all = true;
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    all = all && v4k::quant::e4m3_code(value[c]) == c;
  }
  expect(all, "e4m3_code(value of c) == c for every finite code");
  expect((v4k::quant::e4m3_code(from_bits(0xffc00000u)) & 0x7f) == 0x7f, "NaN has the NaN code");
}

void e2m1_codes_round_to_nearest_even() {
  using v4k::quant::e2m1_code;
  expect(e2m1_code(0.75f) == 2 && e2m1_code(1.75f) == 4 && e2m1_code(3.5f) == 6, "odd-code ties round up");
  expect(e2m1_code(0.25f) == 0 && e2m1_code(1.25f) == 2 && e2m1_code(2.5f) == 4 && e2m1_code(5.0f) == 6,
         "even-code ties round down");
  expect(e2m1_code(-0.1f) == 8 && e2m1_code(-0.0f) == 8, "values rounding to zero keep their sign");
  expect(e2m1_code(-6.0f) == 15 && e2m1_code(6.0f) == 7, "+-6 are the largest codes");
}

// Whether choose_isa(detected, request) throws std::invalid_argument with `needle` in its message.
bool rejects(v4k::Isa detected, const char* request, const char* needle) {
  try {
    v4k::choose_isa(detected, request);
  } catch (const std::invalid_argument& error) {
    return std::string(error.what()).find(needle) != std::string::npos;
  }
  return false;
}

void isa_override_only_lowers() {
  using v4k::Isa;
  using v4k::choose_isa;
  expect(choose_isa(Isa::avx512, nullptr) == Isa::avx512 && choose_isa(Isa::avx2, "") == Isa::avx2,
         "no request keeps the detected ISA");
  expect(choose_isa(Isa::avx512, "avx2") == Isa::avx2 && choose_isa(Isa::avx512, "baseline") == Isa::baseline &&
             choose_isa(Isa::avx2, "avx2") == Isa::avx2,
         "a request at or below the detected ISA is taken");
  expect(rejects(Isa::avx2, "avx512", "V4_ASCEND_CPU_ISA=avx512: this CPU only supports avx2"),
         "a request above the detected ISA throws naming the variable");
  expect(rejects(Isa::avx512, "AVX2", "unknown ISA") && rejects(Isa::avx512, "sse4", "V4_ASCEND_CPU_ISA"),
         "an unknown name throws naming the variable");
}

// y = x @ w.T of one body against fp64 sums of the same (already rounded) inputs, for shapes that reach
// every row tile (M 1..9), the leftover weight rows (N 7) and a K tail of every length class (K 1..70).
template <typename T>
void small_m_gemm_matches_fp64(void (*body)(v4k::gemm::SmallM<T>), const char* name, double tol) {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal;
  bool ok = true;
  for (int64_t M : {1, 2, 3, 4, 5, 8, 9}) {
    for (int64_t K : {1, 15, 16, 17, 33, 64, 70}) {
      const int64_t N = 7, ldx = K + 3, ldy = N + 2;  // padded rows: strides are honoured
      std::vector<T> x(M * ldx), w(N * K), y(M * ldy, v4k::narrow<T>(-1.0));
      for (auto& v : x) v = v4k::narrow<T>(double(normal(gen)));
      for (auto& v : w) v = v4k::narrow<T>(double(normal(gen)));
      body({x.data(), ldx, M, w.data(), N, K, y.data(), ldy});
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t n = 0; n < N; ++n) {
          double want = 0, scale = 0;
          for (int64_t k = 0; k < K; ++k) {
            const double p = v4k::widen<double>(x[m * ldx + k]) * v4k::widen<double>(w[n * K + k]);
            want += p;
            scale += std::fabs(p);
          }
          ok = ok && std::fabs(v4k::widen<double>(y[m * ldy + n]) - want) <= tol * (scale + 1.0);
        }
        ok = ok && v4k::widen<double>(y[m * ldy + N]) == -1.0;  // padding between rows untouched
      }
    }
  }
  expect(ok, (std::string("small-M GEMM body ") + name + " matches fp64 sums").c_str());
}

void small_m_gemm_bodies() {
  using v4k::bf16;
  namespace g = v4k::gemm;
  // fp32: fp32 rounding of sums of <= 70 terms; bf16: one bf16 rounding of the output (2^-8 relative).
  small_m_gemm_matches_fp64<float>(g::portable::run_baseline<float>, "baseline fp32", 1e-5);
  small_m_gemm_matches_fp64<bf16>(g::portable::run_baseline<bf16>, "baseline bf16", 8e-3);
  small_m_gemm_matches_fp64<double>(g::portable::run_baseline<double>, "baseline fp64", 1e-12);
  small_m_gemm_matches_fp64<float>(g::small_m_gemm<float>, "dispatched fp32", 1e-5);
  small_m_gemm_matches_fp64<bf16>(g::small_m_gemm<bf16>, "dispatched bf16", 8e-3);
  if (v4k::isa() != v4k::Isa::baseline) {
    small_m_gemm_matches_fp64<float>(g::portable::run_avx2<float>, "avx2 fp32", 1e-5);
    small_m_gemm_matches_fp64<bf16>(g::portable::run_avx2<bf16>, "avx2 bf16", 8e-3);
  }
  if (v4k::isa() == v4k::Isa::avx512) {
    small_m_gemm_matches_fp64<float>(g::portable::run_avx512<float>, "portable avx512 fp32", 1e-5);
    small_m_gemm_matches_fp64<float>(g::avx512::run_f32, "avx512 fp32", 1e-5);
    small_m_gemm_matches_fp64<bf16>(g::avx512::run_bf16_widened, "avx512 bf16 widened", 8e-3);
  }
  if (v4k::has_avx512_bf16()) small_m_gemm_matches_fp64<bf16>(g::avx512::run_bf16_dot, "avx512-bf16 dot", 8e-3);
}

// The reciprocal modulo equals the divide (with the sign of m) for every modulus size and sign of a.
void floor_modulus_equals_the_divide() {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min(), kMax = std::numeric_limits<int64_t>::max();
  std::mt19937_64 random(7);
  std::vector<int64_t> moduli = {1, 2, 3, 5, 7, 64, 99'991, 1 << 30, (int64_t{1} << 62) + 1, kMax - 1, kMax};
  for (int bits = 1; bits < 63; ++bits) moduli.push_back(static_cast<int64_t>(random() >> (64 - bits)) | 1);
  bool all = true;
  for (const int64_t m : moduli) {
    const v4k::FloorModulus mod(m);
    std::vector<int64_t> values = {0, 1, -1, m - 1, m, m + 1, -m, -m - 1, -m + 1, kMin, kMax, kMin + 1};
    for (int i = 0; i < 2000; ++i) values.push_back(static_cast<int64_t>(random()));
    for (const int64_t a : values) {
      const int64_t r = a % m;
      all = all && mod(a) == (r < 0 ? r + m : r);
    }
  }
  expect(all, "FloorModulus(m)(a) == a mod m (floor) for every tested m, a");
}

// The fused pass gathers exactly the rows engram_hash_sequence computes, across the prefetch ring, and
// stops at a row outside [-1, R).
void fused_hash_lookup_gathers_the_hashed_rows() {
  const int64_t S = 7, E = 3, R = 20;
  const int64_t ids[S] = {4, 9, 2, 2, 11, 0, 5}, history[2] = {3, 1}, multipliers[3] = {7, -5, 3};
  const int64_t moduli_values[4] = {5, 3, 7, 2}, offsets[4] = {0, 5, 8, -1};  // rows in [-1, 15)
  const auto moduli = v4k::floor_moduli(moduli_values, 4);
  const v4k::EngramHashShape shape{S, 3, 2};
  std::vector<float> table(R * E);
  for (int64_t i = 0; i < R * E; ++i) table[i] = static_cast<float>(i);
  std::vector<int64_t> rows(S * 4);
  v4k::engram_hash_sequence(ids, history, 0, multipliers, moduli.data(), offsets, shape, 0, S, rows.data());
  const v4k::EngramHashLayout layout{multipliers, moduli.data(), offsets, shape, 0};
  v4k::FloatTableRows<float, float> source{table.data(), E};
  std::vector<float> out(S * 4 * E, -1.0f);
  expect(v4k::engram_hash_lookup_sequence(ids, history, layout, source, R, E, 0, S, out.data()),
         "rows in range are accepted");
  bool all = true;
  for (int64_t i = 0; i < S * 4; ++i)
    for (int64_t c = 0; c < E; ++c) all = all && out[i * E + c] == (rows[i] < 0 ? 0.0f : table[rows[i] * E + c]);
  expect(all, "fused output == the rows of engram_hash_sequence gathered");
  expect(!v4k::engram_hash_lookup_sequence(ids, history, layout, source, 10, E, 0, S, out.data()),
         "a row >= R is refused");
}

}  // namespace

int main() {
  isa_override_only_lowers();
  fused_hash_lookup_gathers_the_hashed_rows();
  floor_modulus_equals_the_divide();
  bf16_rounds_to_nearest_even();
  widen_and_narrow_keep_doubles_exact();
  e4m3_codes_round_trip();
  e2m1_codes_round_to_nearest_even();
  small_m_gemm_bodies();
  std::printf("%s\n", failures ? "kernel unit tests FAILED" : "kernel unit tests passed");
  return failures ? 1 : 0;
}
