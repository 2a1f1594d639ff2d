"""sparse_attn cases: V4-Flash decode (CSA, HCA) against a gather + bmm + softmax peer; prefill at S 512
against dense-mask SDPA and compiled flex_attention, and at the spec size S 4096 against the gather peer
in chunks of tokens. Rates count the useful FLOPs of the sparse attention (QK and PV)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from v4_ascend.bench.harness import Case, Workload
from v4_ascend.ops import sparse_attn

HEADS, DIM, WINDOW, TOPK = 64, 512, 128, 512  # V4-Flash attention


def gather_bmm_softmax(q, kv, idx, extra_kv, extra_idx, sink, scale, mask_invalid=False):
    """The peer a user writes in stock PyTorch: gather the rows, bmm, softmax with the sink, bmm (slots
    of -1 masked out when `mask_invalid`; decode has none)."""
    rows = torch.cat([kv[idx.long()], extra_kv[extra_idx.long()]], dim=1)  # [T, K, D]: a gathered copy
    logits = torch.bmm(q, rows.transpose(1, 2)).float() * scale
    T, H, _ = logits.shape
    if mask_invalid:
        logits.masked_fill_(~torch.cat([idx >= 0, extra_idx >= 0], dim=1)[:, None, :], float("-inf"))
    weights = torch.softmax(torch.cat([logits, sink.view(1, H, 1).expand(T, H, 1)], dim=-1), dim=-1)
    return torch.bmm(weights[..., :-1].to(q.dtype), rows)


def chunked_gather_bmm_softmax(q, kv, idx, extra_kv, extra_idx, sink, scale, chunk=256):
    """The gather peer over `chunk` tokens at a time, so that its gathered copy stays O(chunk * K * D)."""
    out = torch.empty_like(q)
    for start in range(0, q.shape[0], chunk):
        part = slice(start, start + chunk)
        out[part] = gather_bmm_softmax(q[part], kv, idx[part], extra_kv, extra_idx[part], sink, scale,
                                       mask_invalid=True)
    return out


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


def _prefill_inputs(device, dtype, tokens, n_c):
    """A causal 128-row sliding window over the tokens' own entries plus top-k 512 of a pool of n_c."""
    q = torch.randn(tokens, HEADS, DIM, device=device).to(dtype)
    own = torch.randn(tokens, DIM, device=device).to(dtype)
    position = torch.arange(tokens)[:, None] - torch.arange(WINDOW)[None, :]
    window_idx = position.masked_fill(position < 0, -1).to(torch.int32).to(device)
    pool = torch.randn(n_c, DIM, device=device).to(dtype)
    pool_idx = _topk_rows(tokens, n_c, TOPK).to(device)
    sink = torch.randn(HEADS, device=device)
    valid_rows = int((window_idx >= 0).sum()) + pool_idx.numel()
    return q, own, window_idx, pool, pool_idx, sink, valid_rows


def prefill(device, *, dtype, tokens, n_c):
    """Prefill of `tokens` tokens (see _prefill_inputs). The peers attend over all tokens + n_c keys with
    the same pattern as a dense boolean mask (O(T * N) memory): SDPA, and flex_attention compiled with a
    block mask (CPU and CUDA only). Neither has the sink (SDPA has none; compiled flex on the CPU cannot
    return the lse that would add it afterwards), so they do slightly less work."""
    scale = DIM**-0.5
    q, own, window_idx, pool, pool_idx, sink, valid_rows = _prefill_inputs(device, dtype, tokens, n_c)
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
    return Workload(
        kernel=lambda: sparse_attn(q, own, window_idx, sink, scale, pool, pool_idx),
        baselines=baselines,
        flops=_flops(1, valid_rows),
        note=f"prefill at S {tokens} (flash-prefill-s4096 is the spec size); the peers have no sink; "
        "SDPA computes all T x (T + n_c) logits; flex compiles once, in the untimed warm-up",
    )


def prefill_at_scale(device, *, dtype, tokens, n_c):
    """Prefill at the spec size against the gather peer in chunks of 256 tokens. The dense-mask peers
    do not fit: SDPA materialises H x T x (T + n_c) fp32 logits, and compiled flex_attention's per-call
    time, already ~2 s at S 512, grows with T x (window + n_c) blocks (see the case note)."""
    scale = DIM**-0.5
    q, own, window_idx, pool, pool_idx, sink, valid_rows = _prefill_inputs(device, dtype, tokens, n_c)
    sdpa_logits_gb = 4 * HEADS * tokens * (tokens + n_c) / 1e9
    return Workload(
        kernel=lambda: sparse_attn(q, own, window_idx, sink, scale, pool, pool_idx),
        baselines={"peer: gather + bmm + softmax, 256-token chunks": lambda: chunked_gather_bmm_softmax(
            q, own, window_idx, pool, pool_idx, sink, scale)},
        flops=_flops(1, valid_rows),
        note=f"dense-mask peers not run: SDPA would hold {sdpa_logits_gb:.1f} GB of fp32 logits "
        f"(H x T x (T + n_c)) and compute {4 * HEADS * tokens * (tokens + n_c) * DIM / 1e12:.1f} TFLOP, "
        "compiled flex (~2 s per call at S 512) would take minutes per case; the chunked gather peer holds "
        "O(256 x K x D), the kernel O(threads x (H + 128) x D) besides its outputs",
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
    shape = f"S4096 H{HEADS} D{DIM}, window {WINDOW} + top-k {TOPK} of 1024"
    yield Case("sparse_attn", "flash-prefill-s4096", shape, torch.bfloat16,
               partial(prefill_at_scale, dtype=torch.bfloat16, tokens=4096, n_c=1024))


CASES = list(_cases())
