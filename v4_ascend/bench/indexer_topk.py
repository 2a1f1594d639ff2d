"""indexer_topk cases: V4-Flash lightning-indexer scoring (64 heads x 128) and top-k 512 over the
compressed pool (ratio 4), prefill and decode, against the reference op called directly. The rate
counts the scoring's multiply-adds over the visible entries only (causal: entry i is visible to the
query at position p when i < (p + 1) // 4)."""

from __future__ import annotations

from functools import partial

import torch

from v4_ascend import library
from v4_ascend.bench.harness import Case, Workload
from v4_ascend.ops import indexer_topk

HEADS, DIM, RATIO, TOPK = 64, 128, 4, 512  # V4-Flash indexer


def select(device, *, dtype, q_pos: list[int] | None = None, tokens: int = 0):
    """Queries at positions `q_pos` (a causal prefill of `tokens` tokens from 0 when None) over the
    pool of the longest query's visible entries."""
    positions = torch.tensor(q_pos, dtype=torch.int32) if q_pos else torch.arange(tokens, dtype=torch.int32)
    pool = int(positions.max() + 1) // RATIO
    T = positions.numel()
    q = torch.randn(T, HEADS, DIM, device=device).to(dtype)
    k = torch.randn(pool, DIM, device=device).to(dtype)
    weights = torch.randn(T, HEADS, device=device) * (DIM * HEADS) ** -0.5
    positions = positions.to(device)
    reference = library.ops()["indexer_topk"].reference
    visible = float(((positions.long() + 1) // RATIO).sum())
    return Workload(
        kernel=lambda: indexer_topk(q, k, weights, positions, RATIO, TOPK),
        baselines={"reference": lambda: reference(q, k, weights, positions, RATIO, TOPK)},
        flops=2.0 * HEADS * DIM * visible,
        note="GFLOP/s of the scoring (q . k over the visible entries; ReLU, weighting and top-k not counted)",
    )


def _cases():
    for dtype in (torch.float32, torch.bfloat16):
        yield Case("indexer_topk", "flash-prefill-s4096", f"S4096 -> n_c 1024, H{HEADS} x {DIM}, top-k {TOPK}", dtype,
                   partial(select, dtype=dtype, tokens=4096))
        yield Case("indexer_topk", "flash-decode-b4-ctx64k", f"T4 at position 65535 -> n_c 16384, H{HEADS} x {DIM}, "
                   f"top-k {TOPK}", dtype, partial(select, dtype=dtype, q_pos=[65535] * 4))
        yield Case("indexer_topk", "prefill-s512", f"S512 -> n_c 128, H{HEADS} x {DIM}, top-k {TOPK}", dtype,
                   partial(select, dtype=dtype, tokens=512), quick=dtype == torch.bfloat16)


CASES = list(_cases())
