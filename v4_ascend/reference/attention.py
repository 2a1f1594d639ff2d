"""Reference kernels of the attention family (sparse attention with sink)."""

from __future__ import annotations

import torch

from v4_ascend import _validation as v

# Gathered KV rows held at once by the reference, in elements (bounds memory at 1M-token contexts).
_GATHER_BUDGET = 1 << 26


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation, fp64 when the inputs are fp64 (so that gradcheck works)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_sparse_attn(q, kv, idx, sink, scale, extra_kv, extra_idx, topk_length, extra_topk_length):
    """Shape/dtype checks shared by the reference and the fake kernel; returns (T, H, D)."""
    op = "sparse_attn"
    v.tensor(op, "q", q, rank=3, dtypes=v.FLOAT_DTYPES)
    T, H, D = q.shape
    v.tensor(op, "kv", kv, rank=2, shape=(None, D), device=q.device)
    v.same_dtype(op, "kv", kv, q, "q")
    v.tensor(op, "idx", idx, rank=2, dtypes=(torch.int32,), shape=(T, None), device=q.device)
    if sink is not None:
        v.tensor(op, "sink", sink, dtypes=(torch.float32, torch.float64), shape=(H,), device=q.device)
    if not isinstance(scale, float):
        v.fail(op, "scale", "a float", type(scale).__name__)
    if (extra_kv is None) != (extra_idx is None):
        v.fail(op, "extra_idx", "given together with 'extra_kv'", "only one of them")
    if extra_kv is not None:
        v.tensor(op, "extra_kv", extra_kv, rank=2, shape=(None, D), device=q.device)
        v.same_dtype(op, "extra_kv", extra_kv, q, "q")
        v.tensor(op, "extra_idx", extra_idx, rank=2, dtypes=(torch.int32,), shape=(T, None), device=q.device)
    elif extra_topk_length is not None:
        v.fail(op, "extra_topk_length", "None when there is no 'extra_kv'", "a tensor")
    for name, length in (("topk_length", topk_length), ("extra_topk_length", extra_topk_length)):
        if length is not None:
            v.tensor(op, name, length, dtypes=(torch.int32,), shape=(T,), device=q.device)
    return T, H, D


def _scope_logits(q, kv, idx, length, scale, acc):
    """Scaled logits [T, H, K] and values [T, K, D] of one KV scope; invalid slots get -inf / 0."""
    valid = idx >= 0
    if length is not None:
        valid &= torch.arange(idx.shape[1], device=idx.device) < length[:, None]
    rows = kv.index_select(0, idx.clamp(min=0).flatten().long()).view(*idx.shape, -1).to(acc)
    rows = rows * valid[..., None]
    logits = torch.einsum("thd,tkd->thk", q.to(acc), rows) * scale
    return logits.masked_fill(~valid[:, None, :], float("-inf")), rows


def sparse_attn(
    q, kv, idx, sink, scale, extra_kv=None, extra_idx=None, topk_length=None, extra_topk_length=None
):
    check_sparse_attn(q, kv, idx, sink, scale, extra_kv, extra_idx, topk_length, extra_topk_length)
    T, H, D = q.shape
    v.index_range("sparse_attn", "idx", idx, kv.shape[0], allow_invalid=True)
    if extra_kv is not None:
        v.index_range("sparse_attn", "extra_idx", extra_idx, extra_kv.shape[0], allow_invalid=True)
    for name, length, width in (
        ("topk_length", topk_length, idx.shape[1]),
        ("extra_topk_length", extra_topk_length, None if extra_idx is None else extra_idx.shape[1]),
    ):
        if length is not None and length.numel() and (int(length.min()) < 0 or int(length.max()) > width):
            raise ValueError(f"sparse_attn: '{name}' values must be in [0, {width}]")
    acc = accumulation_dtype(q.dtype)
    out = torch.empty(T, H, D, dtype=q.dtype, device=q.device)
    lse = torch.empty(T, H, dtype=acc, device=q.device)
    width = idx.shape[1] + (0 if extra_idx is None else extra_idx.shape[1])
    step = max(1, _GATHER_BUDGET // max(1, width * D))
    for t0 in range(0, T, step):
        t1 = min(T, t0 + step)
        scopes = [_scope_logits(q[t0:t1], kv, idx[t0:t1], _rows(topk_length, t0, t1), scale, acc)]
        if extra_kv is not None:
            scopes.append(
                _scope_logits(q[t0:t1], extra_kv, extra_idx[t0:t1], _rows(extra_topk_length, t0, t1), scale, acc)
            )
        logits = torch.cat([s[0] for s in scopes], dim=-1)
        values = torch.cat([s[1] for s in scopes], dim=1)
        out[t0:t1], lse[t0:t1] = _softmax_with_sink(logits, values, sink, acc)
    return out, lse.to(torch.float32) if q.dtype != torch.float64 else lse


def _rows(x, t0, t1):
    return None if x is None else x[t0:t1]


def _softmax_with_sink(logits, values, sink, acc):
    """softmax over [logits | sink] with the sink column dropped from the value sum."""
    has_valid = torch.isfinite(logits).any(dim=-1)
    peak = logits.amax(dim=-1).where(has_valid, torch.zeros((), dtype=acc, device=logits.device))
    if sink is not None:
        peak = torch.maximum(peak, sink.to(acc)[None, :])
    weights = torch.exp(logits - peak[..., None])
    total = weights.sum(dim=-1)
    lse = (peak + torch.log(total)).where(has_valid, torch.full_like(peak, float("-inf")))
    denom = total + (torch.exp(sink.to(acc)[None, :] - peak) if sink is not None else 0.0)
    out = torch.einsum("thk,tkd->thd", weights, values)
    out = out / denom.where(denom > 0, torch.ones_like(denom))[..., None]
    return out, lse
