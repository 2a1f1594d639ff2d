// Torch-free mHC pre-mix (v4_math.md §4): per token, with v = vec(x) in R^{nD} and
// m = (fn @ v) / sqrt(mean(v^2) + norm_eps):
//   pre_i = sigmoid(scale[0] m[i] + base[i]) + hc_eps,   post_i = 2 sigmoid(scale[1] m[n+i] + base[n+i]),
//   comb = Sinkhorn(scale[2] m[2n:] + base[2n:] as n x n),   u = sum_i pre_i x[i].
// Tokens go in groups of kMhcTokens: the group's streams are widened once (with their sum of squares), and
// fn is streamed once per group in K slices, each 4 x 4 (mix, token) tile in vector-wide lanes.
// Everything after the dots (sigmoids, Sinkhorn, the weighted stream sum) is per token on a few values.
// Dot products and sums are ordered differently from the reference's GEMM, so results agree to rounding.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/dtypes.h"
#include "kernels/isa.h"

namespace v4k {

constexpr int64_t kMhcTile = 4;     // mixes and tokens per dot-product tile
constexpr int64_t kMhcTokens = 8;   // tokens per group: 4 fn rows are reused from L2 by 2 token tiles
constexpr int64_t kMhcLanes = 16;   // K is padded to a multiple of this (one 512-bit fp32 vector)
constexpr int64_t kMhcDepth = 1024;  // K slice per pass (a multiple of kMhcLanes)
constexpr int64_t kMhcChannelTile = 256;  // channels per accumulator tile of the weighted stream sum

// dots[a * 4 + b] = rows[a] . cols[b] over K (a multiple of kMhcLanes), in lane-wise partial sums.
template <typename A>
V4K_INLINE void mhc_dot_tile_body(const A* const* rows, const A* const* cols, int64_t K, A* dots) {
  constexpr int64_t L = 64 / sizeof(A);
  A acc[kMhcTile][kMhcTile][L] = {};
  const A *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
  const A *c0 = cols[0], *c1 = cols[1], *c2 = cols[2], *c3 = cols[3];
  for (int64_t k = 0; k < K; k += L) {
    for (int64_t l = 0; l < L; ++l) {
      const A x0 = c0[k + l], x1 = c1[k + l], x2 = c2[k + l], x3 = c3[k + l];
      const A w[kMhcTile] = {r0[k + l], r1[k + l], r2[k + l], r3[k + l]};
      for (int64_t a = 0; a < kMhcTile; ++a) {
        acc[a][0][l] += w[a] * x0;
        acc[a][1][l] += w[a] * x1;
        acc[a][2][l] += w[a] * x2;
        acc[a][3][l] += w[a] * x3;
      }
    }
  }
  for (int64_t a = 0; a < kMhcTile; ++a)
    for (int64_t b = 0; b < kMhcTile; ++b) {
      A total = 0;
      for (int64_t l = 0; l < L; ++l) total += acc[a][b][l];
      dots[a * kMhcTile + b] = total;
    }
}

V4K_DISPATCH(void, mhc_dot_tile, mhc_dot_tile_body,
             (const float* const* rows, const float* const* cols, int64_t K, float* dots), (rows, cols, K, dots))
V4K_DISPATCH(void, mhc_dot_tile, mhc_dot_tile_body,
             (const double* const* rows, const double* const* cols, int64_t K, double* dots), (rows, cols, K, dots))

struct MhcPreShape {
  int64_t n, D, K;  // streams, channels, padded row length of fn (>= n * D, multiple of kMhcLanes)
  int64_t iters;
  double norm_eps, hc_eps;
  int64_t mixes() const { return (2 + n) * n; }
};

template <typename A>
inline A sigmoid(A x) {
  return A(1) / (A(1) + std::exp(-x));
}

// Sinkhorn projection of one n x n matrix in place: row softmax + eps, column pass, then iters - 1 (row,
// column) passes, as the reference.
template <typename A>
void mhc_sinkhorn(A* m, int64_t n, int64_t iters, A eps) {
  for (int64_t i = 0; i < n; ++i) {
    A* row = m + i * n;
    const A peak = *std::max_element(row, row + n);
    A total = 0;
    for (int64_t j = 0; j < n; ++j) total += row[j] = std::exp(row[j] - peak);
    for (int64_t j = 0; j < n; ++j) row[j] = row[j] / total + eps;
  }
  auto columns = [&] {
    for (int64_t j = 0; j < n; ++j) {
      A total = 0;
      for (int64_t i = 0; i < n; ++i) total += m[i * n + j];
      for (int64_t i = 0; i < n; ++i) m[i * n + j] /= total + eps;
    }
  };
  auto rows = [&] {
    for (int64_t i = 0; i < n; ++i) {
      A total = 0;
      for (int64_t j = 0; j < n; ++j) total += m[i * n + j];
      for (int64_t j = 0; j < n; ++j) m[i * n + j] /= total + eps;
    }
  };
  columns();
  for (int64_t it = 1; it < iters; ++it) rows(), columns();
}

// Per-thread buffers: the group's widened streams and its mixes.
template <typename A>
struct MhcPreWorkspace {
  std::vector<A> x, mixes, pre;
  explicit MhcPreWorkspace(const MhcPreShape& s)
      : x(kMhcTokens * s.K, A(0)), mixes(kMhcTokens * s.mixes()), pre(s.n) {}
};

// Tokens [t0, t1) (at most kMhcTokens): x [T, n, D], fn [M, K] in A, scale [3], base [M] in A.
template <typename T, typename A>
void mhc_pre_group(const T* x, const A* fn, const A* scale, const A* base, const MhcPreShape& s, int64_t t0,
                   int64_t t1, T* u, A* post, A* comb, MhcPreWorkspace<A>& ws) {
  const int64_t n = s.n, D = s.D, M = s.mixes(), nD = n * D, tokens = t1 - t0;
  A rho[kMhcTokens];
  const A* cols[kMhcTokens];
  for (int64_t b = 0; b < kMhcTokens; ++b) {
    A* dst = ws.x.data() + b * s.K;
    cols[b] = dst;
    if (b >= tokens) continue;  // unused columns keep their (zero or stale) values; their dots are dropped
    const T* src = x + (t0 + b) * nD;
    A squares = 0;
    for (int64_t k = 0; k < nD; ++k) {
      dst[k] = widen<A>(src[k]);
      squares += dst[k] * dst[k];
    }
    rho[b] = A(1) / std::sqrt(squares / A(nD) + A(s.norm_eps));
  }
  std::fill(ws.mixes.begin(), ws.mixes.end(), A(0));
  for (int64_t k0 = 0; k0 < s.K; k0 += kMhcDepth) {  // a depth slice of fn and x stays in L1/L2
    const int64_t depth = std::min(kMhcDepth, s.K - k0);
    const A* slice[kMhcTokens];
    for (int64_t b = 0; b < kMhcTokens; ++b) slice[b] = cols[b] + k0;
    for (int64_t m0 = 0; m0 < M; m0 += kMhcTile) {
      const A* rows[kMhcTile];
      for (int64_t a = 0; a < kMhcTile; ++a) rows[a] = fn + std::min(m0 + a, M - 1) * s.K + k0;
      for (int64_t b0 = 0; b0 < tokens; b0 += kMhcTile) {
        A dots[kMhcTile * kMhcTile];
        mhc_dot_tile(rows, slice + b0, depth, dots);
        for (int64_t a = 0; a < kMhcTile && m0 + a < M; ++a)
          for (int64_t b = b0; b < std::min(tokens, b0 + kMhcTile); ++b)
            ws.mixes[b * M + m0 + a] += dots[a * kMhcTile + b - b0];
      }
    }
  }
  for (int64_t b = 0; b < tokens; ++b)
    for (int64_t m = 0; m < M; ++m) ws.mixes[b * M + m] *= rho[b];
  const A eps = A(s.hc_eps);
  for (int64_t b = 0; b < tokens; ++b) {
    const int64_t t = t0 + b;
    const A* mix = ws.mixes.data() + b * M;
    A* pre = ws.pre.data();
    for (int64_t i = 0; i < n; ++i) {
      pre[i] = sigmoid(mix[i] * scale[0] + base[i]) + eps;
      post[t * n + i] = A(2) * sigmoid(mix[n + i] * scale[1] + base[n + i]);
    }
    A* c = comb + t * n * n;
    for (int64_t e = 0; e < n * n; ++e) c[e] = mix[2 * n + e] * scale[2] + base[2 * n + e];
    mhc_sinkhorn(c, n, s.iters, eps);
    const A* xs = ws.x.data() + b * s.K;
    T* out = u + t * D;
    for (int64_t d0 = 0; d0 < D; d0 += kMhcChannelTile) {
      const int64_t w = std::min(kMhcChannelTile, D - d0);
      A total[kMhcChannelTile] = {};
      for (int64_t i = 0; i < n; ++i)
        for (int64_t d = 0; d < w; ++d) total[d] += pre[i] * xs[i * D + d0 + d];
      for (int64_t d = 0; d < w; ++d) out[d0 + d] = narrow<T, A>(total[d]);
    }
  }
}

}  // namespace v4k
