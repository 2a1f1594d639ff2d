"""Test double of ``torch_mlu_ops`` 1.13 (contract tests only): documented semantics + call recording.

Each function follows the *documented* math of the tmo op (its docstring in torch_mlu_ops and the calls
in Cambricon/vllm-mlu ``_mlu_ops.py``), written independently of v4_ascend's references with explicit
per-request loops in fp64, and enforces the documented limits and argument types. Behaviour tmo leaves
undefined is made visibly wrong (NaN), so that a test catches a caller relying on it. ``calls`` counts
calls per op and ``history`` keeps each call's positional and keyword arguments.
"""

from __future__ import annotations

import functools
from collections import Counter

import torch

__version__ = "1.13.0"

calls: Counter = Counter()
history: dict[str, list[tuple[tuple, dict]]] = {}


def reset() -> None:
    calls.clear()
    history.clear()


def _recorded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        calls[fn.__name__] += 1
        history.setdefault(fn.__name__, []).append((args, kwargs))
        return fn(*args, **kwargs)

    return wrapper


@_recorded
def group_gemm(a, b, m_list, expand_idx, c, alpha, beta, max_m, d=None):
    """Documented: ``a [M, K]`` rows grouped by expert with counts ``m_list``; ``b [E, N, K]``; rows past
    ``sum(m_list)`` are not written (NaN here)."""
    assert m_list.dtype == torch.int32, "m_list must be int32"
    assert expand_idx is None and c is None and alpha is None and beta is None and d is None
    assert b.dim() == 3 and a.shape[1] == b.shape[2] and m_list.shape == (b.shape[0],)
    counts = [int(n) for n in m_list]
    assert min(counts) >= 0 and sum(counts) <= a.shape[0], "m_list must be non-negative and fit in a"
    assert max(counts) <= max_m, "max_m must bound every group's row count"
    out = torch.full((a.shape[0], b.shape[1]), float("nan"), dtype=a.dtype, device=a.device)
    row = 0
    for g, n in enumerate(counts):
        out[row:row + n] = (a[row:row + n].double() @ b[g].double().T).to(a.dtype)
        row += n
    return out


@_recorded
def single_query_cached_kv_attn(
    q, k_cache, v_cache, out, block_tables, context_lens, k_cache_quant_scale, v_cache_quant_scale,
    alibi_slopes, max_context_len, windows_size_left, windows_size_right, softmax_scale, return_lse=False,
    kv_cache_quant_bit_size=-1, q_quant_scale=None, out_quant_scale=None, out_dtype=torch.half,
    compute_dtype=torch.float, head_size_v=-1, mask=None, cu_seq_q=None, max_seq_q=-1, learnable_sink=None,
):
    """Documented: for request b, keys/values are the first ``context_lens[b]`` slots of its paged cache
    (slot j lives in block ``block_tables[b, j // block_size]`` at ``j % block_size``);
    ``out = softmax(q k^T * scale) v`` with ``exp(learnable_sink[h])`` added to each denominator;
    ``lse [B, H, seq_q] = logsumexp(q k^T * scale)``. ``v_cache`` None: K and V share ``k_cache``
    (values are its first ``head_size_v`` channels). Limit: ``seq_q * H_q / H_kv <= 128`` (256 with bf16
    KV). An empty context is undefined (NaN here)."""
    assert k_cache_quant_scale is None and v_cache_quant_scale is None and q_quant_scale is None
    assert alibi_slopes is None and mask is None and cu_seq_q is None and out_quant_scale is None
    assert kv_cache_quant_bit_size == -1 and windows_size_left == -1 and windows_size_right == -1
    assert compute_dtype == torch.float32
    assert block_tables.dtype == torch.int32 and context_lens.dtype == torch.int32
    B, S, Hq, Dqk = q.shape
    _, Hkv, block_size, cache_dim = k_cache.shape
    Dv = head_size_v if v_cache is None else v_cache.shape[-1]
    assert v_cache is not None or cache_dim >= max(Dqk, Dv)
    assert out.shape == (B, S, Hq, Dv) and out.dtype == q.dtype and k_cache.dtype == q.dtype
    limit = 256 if k_cache.dtype == torch.bfloat16 else 128
    if S * (Hq // Hkv) > limit:
        raise RuntimeError(f"single_query_cached_kv_attn: seq_q * q_head / kv_head must be <= {limit}")
    if learnable_sink is not None:
        assert learnable_sink.dtype == torch.float32 and learnable_sink.shape == (Hq,)
    values_cache = k_cache if v_cache is None else v_cache
    lse = torch.full((B, Hq, S), float("-inf"), dtype=torch.float32, device=q.device)
    for b in range(B):
        n = int(context_lens[b])
        assert max_context_len <= 0 or n <= max_context_len
        if n == 0:
            out[b] = float("nan")
            continue
        slots = torch.arange(n)
        blocks = block_tables[b][slots // block_size].long()
        keys = k_cache[blocks, :, slots % block_size][..., :Dqk].double()  # [n, Hkv, Dqk]
        values = values_cache[blocks, :, slots % block_size][..., :Dv].double()
        kv_head = torch.arange(Hq) // (Hq // Hkv)
        logits = torch.einsum("shd,nhd->shn", q[b].double(), keys[:, kv_head]) * softmax_scale
        peak = logits.amax(dim=-1, keepdim=True)
        weights = torch.exp(logits - peak)
        denominator = weights.sum(dim=-1, keepdim=True)
        if learnable_sink is not None:
            denominator = denominator + torch.exp(learnable_sink.double()[None, :, None] - peak)
        out[b] = torch.einsum("shn,nhd->shd", weights / denominator, values[:, kv_head]).to(out.dtype)
        lse[b] = (peak + torch.log(weights.sum(dim=-1, keepdim=True)))[..., 0].T.float()
    return (out, lse) if return_lse else out
