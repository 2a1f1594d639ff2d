// Torch-free GEMM for groups of few rows (MoE decode): y [M, N] = x [M, K] @ w [N, K].T, streaming each
// weight row from memory once. A register tile takes kTileCols weight rows against up to kTileRows rows
// of x, so every loaded weight vector feeds several accumulators; rows of x past kTileRows are further
// tiles over the same weight rows, which are then still in cache. Sums are fp32 (fp64 for double) and
// rounded once to T, as a GEMM in T with fp32 accumulation.
//
// Bodies: AVX-512 (fp32 FMA; bf16 with vdpbf16ps when the CPU has AVX512-BF16, else widened to fp32 FMA)
// in their own translation units (small_m_gemm_avx512*.cpp), and a portable body compiled for AVX2+FMA
// and for the baseline (any T: float, double, bf16, _Float16).
#pragma once
#include <cstdint>
#include <type_traits>

#include "kernels/dtypes.h"
#include "kernels/isa.h"

namespace v4k::gemm {

constexpr int kTileRows = 4;  // rows of x per register tile
constexpr int kTileCols = 4;  // weight rows per register tile

// Arguments of one product: x rows are ldx apart, y rows ldy apart, w is N dense rows of K.
template <typename T>
struct SmallM {
  const T* x;
  int64_t ldx;
  int64_t M;
  const T* w;
  int64_t N;
  int64_t K;
  T* y;
  int64_t ldy;
};

namespace portable {

// y tile [R, C] at (m, n): dot products in 8 independent lanes per (row, weight row), reduced pairwise.
template <typename T, int R, int C>
V4K_INLINE void tile(const SmallM<T>& p, int64_t m, int64_t n) {
  using A = typename Acc<T>::type;
  constexpr int L = 8;
  const T* x = p.x + m * p.ldx;
  const T* w = p.w + n * p.K;
  A acc[R][C][L] = {};
  int64_t k = 0;
  for (; k + L <= p.K; k += L) {
    A wv[C][L];
    for (int c = 0; c < C; ++c)
      for (int l = 0; l < L; ++l) wv[c][l] = widen<A>(w[c * p.K + k + l]);
    for (int r = 0; r < R; ++r) {
      A xv[L];
      for (int l = 0; l < L; ++l) xv[l] = widen<A>(x[r * p.ldx + k + l]);
      for (int c = 0; c < C; ++c)
        for (int l = 0; l < L; ++l) acc[r][c][l] += xv[l] * wv[c][l];
    }
  }
  const int rest = static_cast<int>(p.K - k);  // < L columns left
  for (int j = 0; j < rest; ++j)
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c][j] += widen<A>(x[r * p.ldx + k + j]) * widen<A>(w[c * p.K + k + j]);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      const A* a = acc[r][c];
      p.y[(m + r) * p.ldy + n + c] = narrow<T>(((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])));
    }
}

template <typename T, int C>
V4K_INLINE void row_tiles(const SmallM<T>& p, int64_t n) {
  int64_t m = 0;
  for (; m + kTileRows <= p.M; m += kTileRows) tile<T, kTileRows, C>(p, m, n);
  switch (p.M - m) {
    case 3: return tile<T, 3, C>(p, m, n);
    case 2: return tile<T, 2, C>(p, m, n);
    case 1: return tile<T, 1, C>(p, m, n);
    default: return;
  }
}

template <typename T>
V4K_INLINE void run(SmallM<T> p) {
  int64_t n = 0;
  for (; n + kTileCols <= p.N; n += kTileCols) row_tiles<T, kTileCols>(p, n);
  for (; n < p.N; ++n) row_tiles<T, 1>(p, n);
}

// The portable body per ISA (the unit tests call each one), and its dispatch.
template <typename T>
V4K_TARGET_AVX512 void run_avx512(SmallM<T> p) { run(p); }
template <typename T>
V4K_TARGET_AVX2 void run_avx2(SmallM<T> p) { run(p); }
template <typename T>
void run_baseline(SmallM<T> p) { run(p); }

template <typename T>
void body(SmallM<T> p) {
  switch (isa()) {
    case Isa::avx512: return run_avx512(p);
    case Isa::avx2: return run_avx2(p);
    default: return run_baseline(p);
  }
}

}  // namespace portable

namespace avx512 {
// Defined in small_m_gemm_avx512.cpp (AVX-512 F/BW/VL + FMA) and small_m_gemm_avx512_bf16.cpp (+ BF16).
void run_f32(SmallM<float> p);
void run_bf16_widened(SmallM<bf16> p);
void run_bf16_dot(SmallM<bf16> p);
}  // namespace avx512

// y = x @ w.T for the p.M rows of x against the p.N weight rows, with the widest body this CPU runs.
template <typename T>
void small_m_gemm(SmallM<T> p) {
  if (p.M <= 0 || p.N <= 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (isa() == Isa::avx512) return avx512::run_f32(p);
  } else if constexpr (std::is_same_v<T, bf16>) {
    if (has_avx512_bf16()) return avx512::run_bf16_dot(p);
    if (isa() == Isa::avx512) return avx512::run_bf16_widened(p);
  }
  portable::body(p);
}

}  // namespace v4k::gemm
