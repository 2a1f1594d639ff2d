"""Reference kernels of the attention family: sparse attention with sink, KV compressor, lightning indexer."""

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
    if kv.shape[0]:
        rows = kv.index_select(0, idx.clamp(min=0).flatten().long()).view(*idx.shape, kv.shape[1]).to(acc)
        rows = rows * valid[..., None]
    else:  # an empty pool: every slot is -1 (checked), nothing to gather
        rows = q.new_zeros(*idx.shape, kv.shape[1], dtype=acc)
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
    """softmax over [logits | sink] with the sink column dropped from the value sum.

    Written as ``softmax(logits) @ values * sigmoid(lse - sink)``: the sink only rescales the output,
    so neither a sink far above every logit nor a row without any valid slot can underflow or NaN.
    """
    T, H, K = logits.shape
    peak = logits.amax(dim=-1) if K else logits.new_full((T, H), float("-inf"))
    has_valid = torch.isfinite(peak)
    peak = peak.where(has_valid, torch.zeros((), dtype=acc, device=logits.device))
    weights = torch.exp(logits - peak[..., None])
    total = weights.sum(dim=-1)
    # log(1) and /1 on empty rows keep their backward free of 0 * inf = NaN.
    safe_total = total.where(has_valid, torch.ones_like(total))
    lse = (peak + torch.log(safe_total)).where(has_valid, torch.full_like(peak, float("-inf")))
    out = torch.einsum("thk,tkd->thd", weights, values) / safe_total[..., None]
    if sink is not None:
        out = out * torch.sigmoid(lse - sink.to(acc)[None, :])[..., None]
    return out, lse


# ---------------------------------------------------------------------------------------------------
# KV compressor: gated softmax pooling of blocks of `ratio` tokens (v4_math.md §3.4)


def compressor_width(features: int, overlap: bool, op: str = "kv_compress") -> int:
    """Entry width d' from the projected width c*d' (c = 2 with overlap)."""
    if overlap and features % 2:
        v.fail(op, "kv", "an even last dim with overlap=True (two halves)", features)
    return features // 2 if overlap else features


def _check_compressor_inputs(op, kv, score, ape, ratio, overlap, rank):
    """Checks shared by both compressor ops (features on the last dim of ``kv``); returns d'."""
    v.tensor(op, "kv", kv, rank=rank, dtypes=v.FLOAT_DTYPES)
    v.tensor(op, "score", score, shape=tuple(kv.shape), device=kv.device)
    v.same_dtype(op, "score", score, kv, "kv")
    if not isinstance(ratio, int) or ratio < 1:
        v.fail(op, "ratio", "a positive int", ratio)
    d = compressor_width(kv.shape[-1], overlap, op)
    v.tensor(op, "ape", ape, dtypes=v.FLOAT_DTYPES, shape=(ratio, kv.shape[-1]), device=kv.device)
    return d


def check_kv_compress_pool(kv, score, ape, ratio, overlap):
    d = _check_compressor_inputs("kv_compress_pool", kv, score, ape, ratio, overlap, rank=3)
    return kv.shape[0], kv.shape[1] // ratio, d


def _pool_blocks(a, g, ratio, overlap, prev_a=None, prev_g=None):
    """Pool complete blocks: ``a``/``g`` ``[B, n*ratio, F]`` (g already biased by ape) -> ``[B, n, d']``.

    With ``overlap`` entry i pools the first halves of block i-1 (``prev_*`` ``[B, ratio, F]`` for the
    block before the first one; absent = value 0, logit -inf) and the second halves of block i.
    """
    B, L, F = a.shape
    blocks_a, blocks_g = a.view(B, L // ratio, ratio, F), g.view(B, L // ratio, ratio, F)
    if overlap:
        d = F // 2
        if prev_a is None:
            prev_a = a.new_zeros(B, ratio, F)
            prev_g = g.new_full((B, ratio, F), float("-inf"))
        n = L // ratio
        before_a = torch.cat((prev_a[:, None], blocks_a[:, :-1]), dim=1)[:, :n, :, :d]
        before_g = torch.cat((prev_g[:, None], blocks_g[:, :-1]), dim=1)[:, :n, :, :d]
        blocks_a = torch.cat((before_a, blocks_a[..., d:]), dim=2)
        blocks_g = torch.cat((before_g, blocks_g[..., d:]), dim=2)
    weights = torch.softmax(blocks_g, dim=2)
    return (weights * blocks_a).sum(dim=2)


def _biased_logits(score, ape, positions, acc):
    return score.to(acc) + ape.to(acc)[positions % ape.shape[0]]


def kv_compress_pool(kv, score, ape, ratio, overlap):
    _, n, _ = check_kv_compress_pool(kv, score, ape, ratio, overlap)
    acc = accumulation_dtype(kv.dtype)
    L = n * ratio
    positions = torch.arange(L, device=kv.device)
    logits = _biased_logits(score[:, :L], ape, positions, acc)
    return _pool_blocks(kv[:, :L].to(acc), logits, ratio, overlap)


def check_kv_compress(kv, score, ape, start_pos, seq_lens, kv_state, score_state, ratio, overlap):
    op = "kv_compress"
    d = _check_compressor_inputs(op, kv, score, ape, ratio, overlap, rank=2)
    F = kv.shape[1]
    v.tensor(op, "start_pos", start_pos, rank=1, dtypes=(torch.int32,), device=kv.device)
    B = start_pos.shape[0]
    v.tensor(op, "seq_lens", seq_lens, dtypes=(torch.int32,), shape=(B,), device=kv.device)
    acc = accumulation_dtype(kv.dtype)
    rows = (2 if overlap else 1) * ratio
    v.tensor(op, "kv_state", kv_state, dtypes=(acc,), shape=(B, rows, F), device=kv.device)
    v.tensor(op, "score_state", score_state, dtypes=(acc,), shape=(B, rows, F), device=kv.device)
    return B, d, acc


def kv_compress(kv, score, ape, start_pos, seq_lens, kv_state, score_state, ratio, overlap):
    _, d, acc = check_kv_compress(kv, score, ape, start_pos, seq_lens, kv_state, score_state, ratio, overlap)
    starts, lens = start_pos.tolist(), seq_lens.tolist()
    if any(s < 0 for s in starts):
        raise ValueError(f"kv_compress: 'start_pos' values must be >= 0, got {min(starts)}")
    if any(n < 0 for n in lens) or sum(lens) != kv.shape[0]:
        raise ValueError(f"kv_compress: 'seq_lens' must be >= 0 and sum to {kv.shape[0]} rows of kv, got {lens}")
    entries, positions, owners = [], [], []
    row = 0
    for b, (P, L) in enumerate(zip(starts, lens)):
        if L == 0:
            continue
        a_new = kv[row:row + L].to(acc)
        g_new = _biased_logits(score[row:row + L], ape, torch.arange(P, P + L, device=kv.device), acc)
        row += L
        # State rows: [previous complete block (overlap only) | partial current block, slot = pos % r].
        first = ratio if overlap else 0
        filled = P % ratio
        cur_a = torch.cat((kv_state[b, first:first + filled], a_new))
        cur_g = torch.cat((score_state[b, first:first + filled], g_new))
        complete = (filled + L) // ratio
        if complete:
            prev = (kv_state[b:b + 1, :ratio], score_state[b:b + 1, :ratio]) if overlap else (None, None)
            span = complete * ratio
            entries.append(_pool_blocks(cur_a[None, :span], cur_g[None, :span], ratio, overlap, *prev)[0])
            positions.append((torch.arange(complete, device=kv.device) + P // ratio) * ratio)
            owners.append(torch.full((complete,), b, device=kv.device))
            if overlap:
                kv_state[b, :ratio] = cur_a[span - ratio:span]
                score_state[b, :ratio] = cur_g[span - ratio:span]
            cur_a, cur_g = cur_a[span:], cur_g[span:]
        kv_state[b, first:first + cur_a.shape[0]] = cur_a
        score_state[b, first:first + cur_g.shape[0]] = cur_g
    if not entries:
        empty = torch.empty(0, dtype=torch.int32, device=kv.device)
        return kv.new_empty(0, d, dtype=acc), empty, empty.clone()
    return (
        torch.cat(entries),
        torch.cat(positions).to(torch.int32),
        torch.cat(owners).to(torch.int32),
    )


# ---------------------------------------------------------------------------------------------------
# Lightning indexer top-k (v4_math.md §3.5)

# Elements of one [chunk, width] score block (and of the per-head-group product behind it).
_SCORE_BUDGET = 1 << 22


def check_indexer_topk(q, k, weights, q_pos, ratio, topk, k_offset):
    op = "indexer_topk"
    v.tensor(op, "q", q, rank=3, dtypes=v.FLOAT_DTYPES)
    T, H, d = q.shape
    v.tensor(op, "k", k, rank=2, shape=(None, d), device=q.device)
    v.same_dtype(op, "k", k, q, "q")
    v.tensor(op, "weights", weights, dtypes=v.FLOAT_DTYPES, shape=(T, H), device=q.device)
    v.tensor(op, "q_pos", q_pos, dtypes=(torch.int32,), shape=(T,), device=q.device)
    if not isinstance(ratio, int) or ratio < 1:
        v.fail(op, "ratio", "a positive int", ratio)
    if not isinstance(topk, int) or topk < 1:
        v.fail(op, "topk", "a positive int", topk)
    if k_offset is not None:
        v.tensor(op, "k_offset", k_offset, dtypes=(torch.int32,), shape=(T,), device=q.device)
    return T, H, d


def indexer_topk(q, k, weights, q_pos, ratio, topk, k_offset=None):
    T, _, _ = check_indexer_topk(q, k, weights, q_pos, ratio, topk, k_offset)
    N = k.shape[0]
    out = torch.full((T, topk), -1, dtype=torch.int32, device=q.device)
    if T == 0:
        return out
    if int(q_pos.min()) < 0:
        raise ValueError(f"indexer_topk: 'q_pos' values must be >= 0, found {int(q_pos.min())}")
    visible = (q_pos.to(torch.int64) + 1) // ratio
    base = torch.zeros_like(visible) if k_offset is None else k_offset.to(torch.int64)
    if int(base.min()) < 0 or int((base + visible).max()) > N:
        raise ValueError(
            f"indexer_topk: 'k_offset' + visible entries (q_pos + 1) // ratio must lie in [0, {N}] rows of 'k'"
        )
    acc = accumulation_dtype(q.dtype)
    rows = max(1, _SCORE_BUDGET // max(1, N))
    for t0 in range(0, T, rows):
        t1 = min(T, t0 + rows)
        lo, hi = int(base[t0:t1].min()), int((base[t0:t1] + visible[t0:t1]).max())
        if hi <= lo:
            continue
        scores = _indexer_scores(q[t0:t1], k[lo:hi], weights[t0:t1], acc)
        column = torch.arange(lo, hi, device=q.device)[None, :]
        seen = (column >= base[t0:t1, None]) & (column < (base + visible)[t0:t1, None])
        scores = scores.masked_fill(~seen, float("-inf"))
        # Stable descending sort: equal scores keep ascending index order (ties -> lower index).
        take = min(topk, hi - lo)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :take] + lo
        slot = torch.arange(take, device=q.device)[None, :]
        out[t0:t1, :take] = order.masked_fill(slot >= visible[t0:t1, None], -1).to(torch.int32)
    return out


def _indexer_scores(q, keys, weights, acc):
    """``sum_h w[t,h] * relu(q[t,h] . keys[i])`` as ``[t, i]``, heads in groups within the budget."""
    C, H, _ = q.shape
    width = keys.shape[0]
    keys = keys.to(acc)
    scores = torch.zeros(C, width, dtype=acc, device=q.device)
    heads = max(1, min(H, _SCORE_BUDGET // (C * width)))
    for h0 in range(0, H, heads):
        dots = torch.einsum("thd,nd->thn", q[:, h0:h0 + heads].to(acc), keys)
        scores += (torch.relu(dots) * weights[:, h0:h0 + heads, None].to(acc)).sum(dim=1)
    return scores
