"""sparse_attn cases: V4-Flash decode (CSA, HCA) against a gather + bmm + softmax peer, and prefill
against a dense-mask SDPA peer. Rates count the useful FLOPs of the sparse attention (QK and PV)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from v4_ascend.bench.harness import Case, Workload
from v4_ascend.ops import sparse_attn

HEADS, DIM, WINDOW, TOPK = 64, 512, 128, 512  # V4-Flash attention


def gather_bmm_softmax(q, kv, idx, extra_kv, extra_idx, sink, scale):
    """The peer a user writes in stock PyTorch: gather the rows, bmm, softmax with the sink, bmm."""
    rows = torch.cat([kv[idx.long()], extra_kv[extra_idx.long()]], dim=1)  # [T, K, D]: a gathered copy
    logits = torch.bmm(q, rows.transpose(1, 2)).float() * scale
    T, H, _ = logits.shape
    weights = torch.softmax(torch.cat([logits, sink.view(1, H, 1).expand(T, H, 1)], dim=-1), dim=-1)
    return torch.bmm(weights[..., :-1].to(q.dtype), rows)


def _topk_rows(tokens: int, pool: int, k: int) -> torch.Tensor:
    """k distinct random entries of the pool per token, like an indexer's top-k."""
    return torch.rand(tokens, pool).argsort(dim=1)[:, :k].to(torch.int32).contiguous()


def _flops(tokens: int, rows_per_token: int) -> float:
    return 4.0 * tokens * HEADS * rows_per_token * DIM  # QK^T and PV, 2 FLOPs per multiply-add


def decode(device, *, dtype, batch, n_c, hca):
    """Batch of one-token decodes: each attends its own 128-row window and top-k 512 (CSA) or all
    n_c (HCA) entries of the compressed pool."""
    scale = DIM**-0.5
    q = torch.randn(batch, HEADS, DIM, device=device).to(dtype)
    window = torch.randn(batch * WINDOW, DIM, device=device).to(dtype)
    window_idx = torch.arange(batch * WINDOW, dtype=torch.int32).view(batch, WINDOW).to(device)
    pool = torch.randn(n_c, DIM, device=device).to(dtype)
    if hca:
        pool_idx = torch.arange(n_c, dtype=torch.int32).expand(batch, n_c).contiguous().to(device)
    else:
        pool_idx = _topk_rows(batch, n_c, TOPK).to(device)
    sink = torch.randn(HEADS, device=device)
    rows = WINDOW + pool_idx.shape[1]
    element = q.element_size()
    return Workload(
        kernel=lambda: sparse_attn(q, window, window_idx, sink, scale, pool, pool_idx),
        baselines={"peer: gather + bmm + softmax": lambda: gather_bmm_softmax(q, window, window_idx, pool, pool_idx,
                                                                               sink, scale)},
        flops=_flops(batch, rows),
        bytes=element * (2 * q.numel() + batch * rows * DIM) + 4 * batch * rows,
        note="outputs allocated per call by kernel and peer alike",
    )


def prefill(device, *, dtype, tokens, n_c):
    """Prefill of `tokens` tokens: a causal 128-row sliding window over the tokens' own entries plus
    top-k 512 of a compressed pool of n_c entries. The peers attend over all tokens + n_c keys with the
    same pattern as a dense boolean mask (O(T * N) memory): SDPA, and flex_attention compiled with a
    block mask (CPU and CUDA only). Neither has the sink (SDPA has none; compiled flex on the CPU cannot
    return the lse that would add it afterwards), so they do slightly less work."""
    scale = DIM**-0.5
    q = torch.randn(tokens, HEADS, DIM, device=device).to(dtype)
    own = torch.randn(tokens, DIM, device=device).to(dtype)
    position = torch.arange(tokens)[:, None] - torch.arange(WINDOW)[None, :]
    window_idx = position.masked_fill(position < 0, -1).to(torch.int32).to(device)
    pool = torch.randn(n_c, DIM, device=device).to(dtype)
    pool_idx = _topk_rows(tokens, n_c, TOPK).to(device)
    sink = torch.randn(HEADS, device=device)

    keys = torch.cat([own, pool])  # [tokens + n_c, D]
    mask = torch.zeros(tokens, tokens + n_c, dtype=torch.bool, device=device)
    rows = torch.arange(tokens, device=device)[:, None]
    mask[rows.expand_as(window_idx)[window_idx >= 0], window_idx[window_idx >= 0].long()] = True
    mask[rows.expand_as(pool_idx), tokens + pool_idx.long()] = True
    q_heads = q.transpose(0, 1).unsqueeze(0)  # [1, H, T, D]
    kv_heads = keys.view(1, 1, -1, DIM).expand(1, HEADS, -1, DIM)

    def sdpa():
        return F.scaled_dot_product_attention(q_heads, kv_heads, kv_heads, attn_mask=mask, scale=scale)

    baselines = {"peer: dense-mask SDPA": sdpa}
    if device.type in ("cpu", "cuda"):
        block_mask = create_block_mask(lambda b, h, row, col: mask[row, col], None, None, tokens, tokens + n_c,
                                       device=device)
        compiled = torch.compile(flex_attention)
        baselines["peer: flex_attention (compiled)"] = lambda: compiled(q_heads, kv_heads, kv_heads,
                                                                         block_mask=block_mask, scale=scale)

    valid_rows = int((window_idx >= 0).sum()) + pool_idx.numel()
    return Workload(
        kernel=lambda: sparse_attn(q, own, window_idx, sink, scale, pool, pool_idx),
        baselines=baselines,
        flops=4.0 * HEADS * valid_rows * DIM,
        note=f"prefill reduced from S 4096 to S {tokens} to fit the time budget; the peers have no sink; "
        "SDPA computes all T x (T + n_c) logits; flex compiles once, in the untimed warm-up",
    )


def _cases():
    for dtype in (torch.float32, torch.bfloat16):
        shape = f"T4 H{HEADS} D{DIM}, window {WINDOW} + top-k {TOPK} of 8192"
        yield Case("sparse_attn", "flash-csa-decode-b4", shape, dtype,
                   partial(decode, dtype=dtype, batch=4, n_c=8192, hca=False), quick=True)
        shape = f"T4 H{HEADS} D{DIM}, window {WINDOW} + all n_c 8192"
        yield Case("sparse_attn", "flash-hca-decode-b4", shape, dtype,
                   partial(decode, dtype=dtype, batch=4, n_c=8192, hca=True), quick=True)
        shape = f"T1 H{HEADS} D{DIM}, window {WINDOW} + top-k {TOPK} of 8192"
        yield Case("sparse_attn", "flash-csa-decode-b1", shape, dtype,
                   partial(decode, dtype=dtype, batch=1, n_c=8192, hca=False))
        shape = f"S512 H{HEADS} D{DIM}, window {WINDOW} + top-k {TOPK} of 2048"
        yield Case("sparse_attn", "flash-prefill-s512", shape, dtype,
                   partial(prefill, dtype=dtype, tokens=512, n_c=2048))


CASES = list(_cases())
