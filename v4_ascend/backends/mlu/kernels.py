"""Cambricon kernels: each maps one v4_ascend op onto torch_mlu_ops where :mod:`.capabilities` says it is exact.

Every tmo call goes through the version-pinned adapter :mod:`.tmo`. :data:`KERNELS` gates every call
through the capability table: a call tmo cannot serve exactly (MLU370, fp64, a shape outside the tmo op's
limits) runs the op's reference composition on the device tensors, never on the CPU, and is counted for
the validation kit.
"""

from __future__ import annotations

import torch

from v4_ascend import _validation as v
from v4_ascend.backends.mlu import capabilities, tmo
from v4_ascend.backends.vendor import VendorKernels
from v4_ascend.reference import attention as attn_ref
from v4_ascend.reference import mhc as mhc_ref
from v4_ascend.reference import moe as moe_ref

KERNELS = VendorKernels(capabilities.CAPABILITIES, capabilities.device_arch)


@KERNELS.kernel("grouped_gemm", moe_ref.check_grouped_gemm)
def grouped_gemm(x, w, offsets):
    M = x.shape[0]
    counts = torch.diff(offsets, prepend=offsets.new_zeros(1))
    if bool((counts < 0).any() | (offsets[-1] > M)):  # one device-to-host sync
        raise ValueError(f"grouped_gemm: 'offsets' must be non-decreasing cumulative row ends <= {M}")
    y = tmo.group_gemm(x, w, counts, max_m=M)
    # tmo leaves rows past the last group unwritten; the contract makes them zero.
    tail = torch.arange(M, device=x.device) >= offsets[-1:]
    return y.masked_fill(tail[:, None], 0)


@KERNELS.kernel("grouped_gemm_masked", moe_ref.check_grouped_gemm_masked)
def grouped_gemm_masked(x, w, counts):
    G, Mmax, K = x.shape
    N = w.shape[1]
    v.index_range("grouped_gemm_masked", "counts", counts, Mmax + 1, allow_invalid=False)
    full = torch.full((G,), Mmax, dtype=torch.int32, device=x.device)
    y = tmo.group_gemm(x.reshape(G * Mmax, K), w, full, max_m=Mmax).view(G, Mmax, N)
    padded = torch.arange(Mmax, device=x.device)[None, :] >= counts[:, None]
    return y.masked_fill(padded[..., None], 0)


@KERNELS.kernel("sparse_attn", attn_ref.check_sparse_attn)
def sparse_attn(q, kv, idx, sink, scale, extra_kv=None, extra_idx=None, topk_length=None, extra_topk_length=None):
    scopes = [("idx", kv, idx, "topk_length", topk_length)]
    if extra_kv is not None:
        scopes.append(("extra_idx", extra_kv, extra_idx, "extra_topk_length", extra_topk_length))
    for idx_name, pool, index, length_name, length in scopes:
        v.index_range("sparse_attn", idx_name, index, pool.shape[0], allow_invalid=True)
        if length is not None:
            v.index_range("sparse_attn", length_name, length, index.shape[1] + 1, allow_invalid=False)
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


@KERNELS.kernel("moe_route", moe_ref.check_moe_route)
def moe_route(logits, topk, route_scale, bias=None, token_ids=None, tid2eid=None):
    if tid2eid is not None:
        v.index_range("moe_route", "token_ids", token_ids, tid2eid.shape[0], allow_invalid=False)
        v.index_range("moe_route", "tid2eid", tid2eid, logits.shape[1], allow_invalid=False)
        token_ids, tid2eid = token_ids.to(torch.int32), tid2eid.to(torch.int32)
    return tmo.moe_softplus_topk(logits, topk, token_ids, tid2eid, bias, route_scale)


@KERNELS.kernel("mhc_pre", mhc_ref.check_mhc_pre)
def mhc_pre(x, fn, scale, base, iters=mhc_ref.V4_SINKHORN_ITERS, norm_eps=mhc_ref.V4_EPS, hc_eps=mhc_ref.V4_EPS):
    # The mixes GEMM (with V4's weightless RMSNorm folded after it) and the weighted stream sum stay
    # composed on the device; tmo does the split, the sigmoids and the Sinkhorn projection.
    mixes, streams = mhc_ref.normalised_mixes(x, fn, norm_eps)
    pre, post, comb = tmo.hc_split_sinkhorn(
        mixes, scale.to(torch.float32), base.to(torch.float32), x.shape[1], iters, hc_eps
    )
    u = (pre.unsqueeze(-1) * streams).sum(dim=1)
    return u.to(x.dtype), post, comb


@KERNELS.kernel("mhc_post", mhc_ref.check_mhc_post)
def mhc_post(f, x, post, comb):
    return tmo.fused_mhc_post(f.contiguous(), x.contiguous(), post.to(torch.float32), comb.to(torch.float32))
