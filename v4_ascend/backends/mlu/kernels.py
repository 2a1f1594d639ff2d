"""Cambricon kernels: each maps one v4_ascend op onto torch_mlu_ops, with why the mapping is exact.

Every tmo call goes through :mod:`.tmo`; every route decision comes from :mod:`.capabilities`. When a
call cannot use tmo exactly (MLU370, fp64, an empty pool), the kernel runs the op's reference on the
device tensors: the reference composition on the MLU, never a CPU fallback.
"""

from __future__ import annotations

import torch

from v4_ascend import _validation as v
from v4_ascend.backends.base import KernelTable
from v4_ascend.backends.mlu import capabilities, tmo
from v4_ascend.reference import attention as attn_ref
from v4_ascend.reference import moe as moe_ref

TABLE = KernelTable("PrivateUse1")


def _kernel(op: str):
    return TABLE.kernel(op, f"torch_mlu_ops: {capabilities.TABLE[op].route}")


@_kernel("grouped_gemm")
def grouped_gemm(x, w, offsets):
    M, _ = moe_ref.check_grouped_gemm(x, w, offsets)
    if capabilities.composition_reason(x.device, x.dtype) or w.shape[0] == 0 or M == 0:
        return moe_ref.grouped_gemm(x, w, offsets)
    counts = torch.diff(offsets, prepend=offsets.new_zeros(1))
    if bool((counts < 0).any() | (offsets[-1] > M)):  # one device-to-host sync
        raise ValueError(f"grouped_gemm: 'offsets' must be non-decreasing cumulative row ends <= {M}")
    y = tmo.group_gemm(x, w, counts, max_m=M)
    # tmo leaves rows past the last group unwritten; the contract makes them zero.
    tail = torch.arange(M, device=x.device) >= offsets[-1:]
    return y.masked_fill(tail[:, None], 0)


@_kernel("grouped_gemm_masked")
def grouped_gemm_masked(x, w, counts):
    Mmax, N = moe_ref.check_grouped_gemm_masked(x, w, counts)
    G, _, K = x.shape
    if capabilities.composition_reason(x.device, x.dtype) or G == 0 or Mmax == 0:
        return moe_ref.grouped_gemm_masked(x, w, counts)
    v.index_range("grouped_gemm_masked", "counts", counts, Mmax + 1, allow_invalid=False)
    full = torch.full((G,), Mmax, dtype=torch.int32, device=x.device)
    y = tmo.group_gemm(x.reshape(G * Mmax, K), w, full, max_m=Mmax).view(G, Mmax, N)
    padded = torch.arange(Mmax, device=x.device)[None, :] >= counts[:, None]
    return y.masked_fill(padded[..., None], 0)


@_kernel("sparse_attn")
def sparse_attn(q, kv, idx, sink, scale, extra_kv=None, extra_idx=None, topk_length=None, extra_topk_length=None):
    attn_ref.check_sparse_attn(q, kv, idx, sink, scale, extra_kv, extra_idx, topk_length, extra_topk_length)
    scopes = [("idx", kv, idx, "topk_length", topk_length)]
    if extra_kv is not None:
        scopes.append(("extra_idx", extra_kv, extra_idx, "extra_topk_length", extra_topk_length))
    for idx_name, pool, index, length_name, length in scopes:
        v.index_range("sparse_attn", idx_name, index, pool.shape[0], allow_invalid=True)
        if length is not None:
            v.index_range("sparse_attn", length_name, length, index.shape[1] + 1, allow_invalid=False)
    if capabilities.sparse_attn_composition_reason(q, [(pool, index) for _, pool, index, _, _ in scopes]):
        return attn_ref.sparse_attn(q, kv, idx, sink, scale, extra_kv, extra_idx, topk_length, extra_topk_length)
    sink = None if sink is None else sink.to(torch.float32)
    out, lse = _attend(q, kv, idx, topk_length, sink, scale)
    if extra_kv is not None:
        extra_out, extra_lse = _attend(q, extra_kv, extra_idx, extra_topk_length, None, scale)
        out, lse = _merge(out, lse, extra_out, extra_lse, sink)
    return out, lse


def _block_table(idx, length):
    """Per query token, its valid entries first (a block_size-1 page table) and how many there are."""
    valid = idx >= 0
    if length is not None:
        valid &= torch.arange(idx.shape[1], device=idx.device) < length[:, None]
    order = torch.argsort((~valid).to(torch.int32), dim=1, stable=True)
    # Slots past a row's count are never read; 0 keeps them inside the pool.
    table = torch.gather(idx, 1, order).clamp(min=0).to(torch.int32)
    return table, valid.sum(dim=1, dtype=torch.int32)


def _attend(q, pool, idx, length, sink, scale):
    """One pool through single_query_cached_kv_attn: ``(out [T, H, D], lse [T, H])``, empty rows 0 / -inf."""
    T, H, D = q.shape
    table, context = _block_table(idx, length)
    cache = pool.contiguous().view(pool.shape[0], 1, 1, D)  # [blocks, H_kv = 1, block_size = 1, D]
    queries = q.unsqueeze(1)  # [B = T, seq_q = 1, H, D]
    step = capabilities.sqcka_heads_per_call(pool.dtype)
    outs, lses = [], []
    for h0 in range(0, H, step):
        part = queries[:, :, h0:h0 + step].contiguous()
        out, lse = tmo.single_query_cached_kv_attn(
            part, cache, torch.empty_like(part), table, context, idx.shape[1], scale,
            None if sink is None else sink[h0:h0 + step],
        )
        outs.append(out[:, 0])
        lses.append(lse[:, :, 0])  # tmo's lse is [B, H, seq_q]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    lse = lses[0] if len(lses) == 1 else torch.cat(lses, dim=1)
    empty = (context == 0)[:, None]
    return out.masked_fill(empty[..., None], 0), lse.masked_fill(empty, float("-inf"))


def _merge(out1, lse1, out2, lse2, sink):
    """Two softmaxes over disjoint entries as one; ``out1`` already has ``exp(sink)`` in its denominator."""
    mass1 = lse1 if sink is None else torch.logaddexp(lse1, sink[None, :])  # log(sum_1 exp + exp(sink))
    total = torch.logaddexp(mass1, lse2)
    total = total.masked_fill(torch.isinf(total), 0)  # -inf only when there is nothing at all: out stays 0
    out = out1.float() * torch.exp(mass1 - total)[..., None] + out2.float() * torch.exp(lse2 - total)[..., None]
    return out.to(out1.dtype), torch.logaddexp(lse1, lse2)
