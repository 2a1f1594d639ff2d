// AVX-512 sparse attention (fp32, and bf16 with AVX512-BF16), compiled in its own translation unit
// for that ISA and only called after a run-time CPU check (the rest of the library stays baseline).
//
// Rows are processed in blocks of kBlock: the logits of all heads x the block are a small GEMM tile
// (q [H, D] x rows [B, D]^T, dot products reduced 16 at a time), followed by an online-softmax
// update and the PV accumulation acc [H, D] += P [H, B] x rows [B, D] held in registers per tile.
// The bf16 kernel multiplies bf16 pairs with fp32 accumulation (vdpbf16ps) and rounds the softmax
// weights P to bf16 for the PV product, like a bf16 GEMM would; sums and the output stay fp32.
#pragma once
#include <cstdint>

namespace v4k::avx512 {

constexpr int64_t kBlock = 128;  // rows per block (a multiple of 32: bf16 PV multiplies pairs of rows)

// True when the vector kernels handle this head dimension (a multiple of 32).
inline bool supports_dim(int64_t dim) { return dim > 0 && dim % 32 == 0; }

// Caller-owned scratch for one thread; sizes in elements for `heads` heads of `dim`.
struct Workspace {
  float* logits;   // heads * kBlock
  float* probs;    // heads * kBlock (bf16 kernel: reused as heads * kBlock bf16)
  float* acc;      // heads * dim
  float* peak;     // heads
  float* total;    // heads
  uint16_t* pairs;  // kBlock * dim (bf16 rows interleaved by pairs)
  const void* zero_row;  // dim floats of 0 (pads the last block)

  static int64_t floats(int64_t heads, int64_t dim) {
    return 2 * heads * kBlock + heads * dim + 2 * heads + kBlock * dim / 2 + dim;
  }

  // Lays the workspace out in `base` (floats(heads, dim) floats, zero-filled by the caller).
  static Workspace carve(float* base, int64_t heads, int64_t dim) {
    Workspace ws;
    ws.logits = base;
    ws.probs = ws.logits + heads * kBlock;
    ws.acc = ws.probs + heads * kBlock;
    ws.peak = ws.acc + heads * dim;
    ws.total = ws.peak + heads;
    ws.pairs = reinterpret_cast<uint16_t*>(ws.total + heads);
    ws.zero_row = ws.total + heads + kBlock * dim / 2;
    return ws;
  }
};

// One query token, `heads` heads: out [heads, dim], lse [heads]; sink is null or [heads].
void attend_f32(const float* q, const float* const* rows, int64_t n_rows, const float* sink, int64_t heads,
                int64_t dim, float scale, float* out, float* lse, const Workspace& ws);
// The same on bf16 data (uint16_t bit patterns), fp32 lse.
void attend_bf16(const uint16_t* q, const uint16_t* const* rows, int64_t n_rows, const float* sink,
                 int64_t heads, int64_t dim, float scale, uint16_t* out, float* lse, const Workspace& ws);

}  // namespace v4k::avx512
