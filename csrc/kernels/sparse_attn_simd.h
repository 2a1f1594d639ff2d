// Vector sparse attention kernels, each compiled in its own translation unit for its ISA and only
// called after the run-time ISA check (the rest of the library stays baseline): AVX-512 (fp32, and
// bf16 with AVX512-BF16) and AVX2 + FMA (fp32, and bf16 widened to fp32 on load).
//
// Rows are processed in blocks of kBlock: the logits of the block x all heads are a small GEMM with the
// heads in vector lanes (rows [B, D] x q^T [D, H], each row element broadcast, q transposed once per
// token), followed by an online-softmax update down the rows (no reductions across lanes) and the PV
// accumulation acc [H, D] += P [H, B] x rows [B, D] held in registers per tile.
// The AVX-512 bf16 kernel multiplies bf16 pairs with fp32 accumulation (vdpbf16ps) and rounds the
// softmax weights P to bf16 for the PV product, like a bf16 GEMM would; sums and the output stay fp32.
#pragma once
#include <cstdint>
#include <cstring>

namespace v4k::simd {

constexpr int64_t kBlock = 128;  // rows per block (a multiple of 32: bf16 PV multiplies pairs of rows)

// True when the vector kernels handle this head dimension (a multiple of 32).
inline bool supports_dim(int64_t dim) { return dim > 0 && dim % 32 == 0; }

// Row pairs per group of 16 columns in the interleaved block of the AVX-512 bf16 kernel: one more than
// kBlock / 2, so that the groups a PV tile streams are not 4 KiB apart (such loads alias: ~20 % slower).
constexpr int64_t kPairStride = kBlock / 2 + 1;

// Heads padded to a whole number of vectors of the widest ISA: logits and weights keep the heads in
// vector lanes ([rows, padded heads]).
inline int64_t padded_heads(int64_t heads) { return (heads + 15) / 16 * 16; }

// Caller-owned scratch for one thread; sizes in floats for `heads` heads of `dim` (hp = padded heads).
struct Workspace {
  int64_t hp;       // padded_heads(heads)
  float* qt;        // dim * hp: q transposed to [dim, hp] (AVX-512 bf16 kernel: [dim / 2, hp] column pairs)
  float* logits;    // kBlock * hp: [rows, hp]
  float* probs;     // kBlock * hp: [rows, hp] (AVX-512 bf16 kernel: [rows / 2, hp] bf16 weight pairs)
  float* acc;       // heads * dim
  float* peak;      // hp
  float* total;     // hp
  float* shrink;    // hp
  uint16_t* pairs;  // 2 * dim * kPairStride (AVX-512 bf16 kernel: bf16 rows interleaved by pairs)
  const void* zero_row;  // dim floats of 0 (pads the last block; also a bf16 row of zeros)

  static int64_t floats(int64_t heads, int64_t dim) {
    const int64_t hp = padded_heads(heads);
    return dim * hp + 2 * kBlock * hp + heads * dim + 3 * hp + dim * kPairStride + dim;
  }

  // Lays the workspace out in `base` (floats(heads, dim) floats, any content) and zero-fills what must
  // start at zero: qt (whose padded heads stay 0) and the zero row.
  static Workspace carve(float* base, int64_t heads, int64_t dim) {
    Workspace ws;
    ws.hp = padded_heads(heads);
    ws.qt = base;
    ws.logits = ws.qt + dim * ws.hp;
    ws.probs = ws.logits + kBlock * ws.hp;
    ws.acc = ws.probs + kBlock * ws.hp;
    ws.peak = ws.acc + heads * dim;
    ws.total = ws.peak + ws.hp;
    ws.shrink = ws.total + ws.hp;
    ws.pairs = reinterpret_cast<uint16_t*>(ws.shrink + ws.hp);
    ws.zero_row = ws.shrink + ws.hp + dim * kPairStride;
    std::memset(ws.qt, 0, sizeof(float) * dim * ws.hp);
    std::memset(ws.shrink + ws.hp + dim * kPairStride, 0, sizeof(float) * dim);
    return ws;
  }
};

}  // namespace v4k::simd

// One query token, `heads` heads: out [heads, dim], lse [heads]; sink is null or [heads]. bf16 data
// are uint16_t bit patterns (fp32 lse).
#define V4K_SPARSE_ATTN_ENTRY_POINTS                                                                          \
  void attend_f32(const float* q, const float* const* rows, int64_t n_rows, const float* sink, int64_t heads, \
                  int64_t dim, float scale, float* out, float* lse, const simd::Workspace& ws);              \
  void attend_bf16(const uint16_t* q, const uint16_t* const* rows, int64_t n_rows, const float* sink,       \
                   int64_t heads, int64_t dim, float scale, uint16_t* out, float* lse, const simd::Workspace& ws);

namespace v4k::avx512 {
V4K_SPARSE_ATTN_ENTRY_POINTS  // needs AVX-512 F/BW/VL/DQ; attend_bf16 also AVX512-BF16
}  // namespace v4k::avx512

namespace v4k::avx2 {
V4K_SPARSE_ATTN_ENTRY_POINTS  // needs AVX2 + FMA
}  // namespace v4k::avx2

#undef V4K_SPARSE_ATTN_ENTRY_POINTS
