"""Test double of ``torch_mlu_ops`` 1.13 (contract tests only): documented semantics + call recording.

Each function follows the *documented* math of the tmo op (its docstring in torch_mlu_ops and the calls
in Cambricon/vllm-mlu ``_mlu_ops.py``), written independently of v4_ascend's references with explicit
per-request loops in fp64, and enforces the documented limits and argument types. Behaviour tmo leaves
undefined is made visibly wrong (NaN), so that a test catches a caller relying on it. ``calls`` counts
calls per op and ``history`` keeps each call's positional and keyword arguments.
"""

from __future__ import annotations

import functools
import math
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


def _sqrt_softplus(value: float) -> float:
    return math.sqrt(math.log1p(math.exp(value)) if value <= 20.0 else value)


@_recorded
def moe_softplus_topk(input, topk, input_ids=None, tid2eid=None, bias=None, route_scale=1.0):
    """Documented: scores ``sqrt(softplus(input))``; expert ids ``tid2eid[input_ids[t]]`` (hash routing) or
    the top ``topk`` of ``scores + bias`` (bias for selection only); weights = picked scores renormalised,
    times ``route_scale``. Returns ``(reduce_weight [T, topk] fp32, expert_id [T, topk] int32)``.
    Assumed (undocumented; the kit's tie case checks it on hardware): descending score order, equal scores
    to the lower expert index."""
    assert input.dtype == torch.float32 and input.dim() == 2, "input is [T, E] fp32"
    assert (input_ids is None) == (tid2eid is None), "hash routing needs input_ids and tid2eid together"
    if tid2eid is not None:
        assert input_ids.dtype == torch.int32 and tid2eid.dtype == torch.int32, "input_ids / tid2eid are int32"
        assert tid2eid.shape[1] == topk, "tid2eid has topk columns"
    if bias is not None:
        assert bias.dtype == torch.float32 and bias.shape == (input.shape[1],), "bias is [E] fp32"
    T, E = input.shape
    logits = input.cpu().tolist()
    weights = torch.empty(T, topk, dtype=torch.float32)
    experts = torch.empty(T, topk, dtype=torch.int32)
    for t in range(T):
        scores = [_sqrt_softplus(value) for value in logits[t]]
        if tid2eid is not None:
            chosen = [int(e) for e in tid2eid.cpu()[int(input_ids.cpu()[t])]]
        else:
            shift = [0.0] * E if bias is None else [float(b) for b in bias.cpu()]
            chosen = sorted(range(E), key=lambda e: (-(scores[e] + shift[e]), e))[:topk]
        total = sum(scores[e] for e in chosen)
        for j, e in enumerate(chosen):
            weights[t, j] = scores[e] / total * route_scale
            experts[t, j] = e
    return weights.to(input.device), experts.to(input.device)


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


@_recorded
def hc_split_sinkhorn(mixes, hc_scale, hc_base, pre_scale=None, hc_mult=4, sinkhorn_iter=20, eps=1e-6):
    """Documented (V4's hc_split_sinkhorn, which vllm-mlu replaces with it): per token, with
    ``a = mixes * hc_scale[part] + hc_base`` over the parts pre (n), post (n), comb (n * n):
    ``pre = sigmoid(a_pre) + eps``, ``post = 2 * sigmoid(a_post)``, ``comb`` = row softmax of ``a_comb``
    plus eps, a column normalisation, then ``sinkhorn_iter - 1`` (row, column) normalisations, each
    dividing by the sum + eps. All outputs fp32."""
    n = hc_mult
    assert pre_scale is None, "pre_scale is not part of V4's split"
    assert mixes.dtype == torch.float32 and mixes.dim() == 2 and mixes.shape[1] == (2 + n) * n
    assert hc_scale.dtype == torch.float32 and hc_scale.shape == (3,)
    assert hc_base.dtype == torch.float32 and hc_base.shape == ((2 + n) * n,)
    assert sinkhorn_iter >= 1
    T = mixes.shape[0]
    scale, base = hc_scale.cpu().tolist(), hc_base.cpu().tolist()
    pre, post, comb = torch.empty(T, n), torch.empty(T, n), torch.empty(T, n, n)
    for t, row in enumerate(mixes.cpu().tolist()):
        for i in range(n):
            pre[t, i] = _sigmoid(row[i] * scale[0] + base[i]) + eps
            post[t, i] = 2.0 * _sigmoid(row[n + i] * scale[1] + base[n + i])
        a = [[row[2 * n + i * n + j] * scale[2] + base[2 * n + i * n + j] for j in range(n)] for i in range(n)]
        m = []
        for i in range(n):
            peak = max(a[i])
            e = [math.exp(v - peak) for v in a[i]]
            m.append([x / sum(e) + eps for x in e])

        def columns(m):
            sums = [sum(m[i][j] for i in range(n)) + eps for j in range(n)]
            return [[m[i][j] / sums[j] for j in range(n)] for i in range(n)]

        m = columns(m)
        for _ in range(sinkhorn_iter - 1):
            m = [[x / (sum(r) + eps) for x in r] for r in m]
            m = columns(m)
        comb[t] = torch.tensor(m, dtype=torch.float64)
    return pre.to(mixes.device), post.to(mixes.device), comb.to(mixes.device)


@_recorded
def fused_mhc_post(x, residual, post, comb, compute_rms=False, eps=1e-6):
    """Documented (V4's hc_post, which vllm-mlu replaces with it): ``out[:, j] = post[:, j] * x +
    sum_i comb[:, i, j] * residual[:, i]`` in fp32, in the residual's dtype. Built for D = 4096, HC = 4
    only. Returns ``(out, rms)`` with ``rms`` None unless ``compute_rms``."""
    N, HC, D = residual.shape
    if (HC, D) != (4, 4096):
        raise RuntimeError(f"fused_mhc_post: only HC = 4 and D = 4096 are supported, got HC = {HC}, D = {D}")
    assert not compute_rms, "the RMS output is not used by v4_ascend"
    assert x.shape == (N, D) and x.dtype == residual.dtype and x.is_contiguous() and residual.is_contiguous()
    assert post.dtype == torch.float32 and post.shape == (N, HC)
    assert comb.dtype == torch.float32 and comb.shape == (N, HC, HC)
    f, streams = x.cpu().double(), residual.cpu().double()
    weights, mixing = post.cpu().double(), comb.cpu().double()
    out = torch.empty(N, HC, D, dtype=torch.float64)
    for j in range(HC):
        acc = weights[:, j, None] * f
        for i in range(HC):
            acc = acc + mixing[:, i, j, None] * streams[:, i]
        out[:, j] = acc
    return out.to(residual.dtype).to(residual.device), None
