"""What Cambricon MLUs serve through torch_mlu_ops (tmo), per op and per arch, and why.

One row per op of the operator contract (ops.md), declared on this branch or not: which tmo ops the
route uses, why that route is exact for V4 (or why V4 needs the on-device reference composition), and
the limits that send a call to the composition. The kernels in :mod:`.kernels` take their decisions
from here, so the report and the code cannot disagree.

Archs: ``mtp_592`` (MLU580/MLU590, the DeepSeek target) and newer (``mtp_613``) get the tmo routes;
``mtp_372`` (MLU370) is unsupported: every op runs the reference composition on the device (never on
the CPU).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

from v4_ascend.backends.base import Route

ARCHES = ("mtp_372", "mtp_592", "mtp_613")
SUPPORTED_ARCHES = ("mtp_592", "mtp_613")
UNKNOWN = "unknown"

MLU370_REASON = (
    "MLU370 (mtp_372) is not supported: vllm-mlu does not support it, mlu-ops dropped it and tmo's V4 "
    "kernels target mtp_592 and newer"
)
COMPOSITION = "reference composition on the device"

# single_query_cached_kv_attn: seq_q * (H_q / H_kv) must stay within this per call (vendors.md section 6).
SQCKA_HEADS = 128
SQCKA_HEADS_BF16_KV = 256
# fused_mhc_post is built for V4-Flash only.
FUSED_MHC_POST_D, FUSED_MHC_POST_HC = 4096, 4
# Floating types tmo's GEMM and attention kernels take (no fp64).
TMO_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class Capability:
    """How one op is served on mtp_592+ (``vendor_ops`` empty: an on-device composition)."""

    op: str
    vendor_ops: tuple[str, ...]
    route: str
    why: str
    limits: str = ""

    @property
    def uses_tmo(self) -> bool:
        return bool(self.vendor_ops)


def _cap(op, vendor_ops, route, why, limits=""):
    return Capability(op, tuple(vendor_ops), route, why, limits)


TABLE: dict[str, Capability] = {
    c.op: c
    for c in (
        _cap(
            "sparse_attn",
            ["single_query_cached_kv_attn"],
            "single_query_cached_kv_attn with learnable_sink: each query token is one single-query request "
            "over a block_size-1 paged view of the pool (block table = its valid indices, compacted); a second "
            "pool is a second call without sink, merged by LSE",
            "exact: one softmax over the listed entries with exp(sink) in the denominator; lse is tmo's "
            "logsumexp of the scaled logits (sink excluded); empty rows are set to out 0 / lse -inf. "
            "flash_attention (prefill) is not used: it reads contiguous K/V per sequence, not per-token index "
            "sets, and has no sink (it would be applied from its LSE: out *= exp(lse)/(exp(lse)+exp(sink)))",
            f"heads per call <= {SQCKA_HEADS} ({SQCKA_HEADS_BF16_KV} with bf16 KV): more heads are split into "
            "several calls, each with its slice of the sink (vllm-mlu's split drops the sink); fp64, an empty "
            "pool or a zero-width index: reference composition",
        ),
        _cap(
            "kv_compress",
            ["fused_compress_multi_kv", "fused_compress_single_kv"],
            "prefill: fused_compress_multi_kv (pooling only) then RMSNorm / apply_rotary / reshape_paged_cache; "
            "decode: fused_compress_single_kv (pool, norm, RoPE, Hadamard and cache write, in place)",
            "exact when tmo's fp32 state [B, coff*ratio, coff*head_dim] is our kv_state/score_state layout and "
            "the unfused pooling is reachable alone (multi_kv); the signature changed between releases "
            "(a paged state_cache variant exists), so the adapter pins it",
        ),
        _cap(
            "indexer_topk",
            ["fused_indexer_q", "masked_indexer_select_paged_kv"],
            "fused_indexer_q (interleaved=True, rope_at_front=False) then masked_indexer_select_paged_kv "
            "(compress_ratio=ratio, index_topk=topk)",
            "V4 places its interleaved RoPE at the tail of the head, so rope_at_front must be False; "
            "visibility i < (t+1)//ratio comes from compress_ratio; ties must pick the lower index "
            "(bit-exact), else the composition",
        ),
        _cap(
            "moe_route",
            ["moe_softplus_topk"],
            "moe_softplus_topk(input, topk, input_ids, tid2eid, bias, route_scale), called by keyword",
            "exact: sqrt(softplus) scores, bias used for selection only, hash routing by tid2eid[token_ids], "
            "weights renormalised and scaled by route_scale; the argument order differs between tmo copies",
        ),
        _cap(
            "grouped_gemm",
            ["group_gemm"],
            "group_gemm(a=x, b=w, m_list=diff(offsets)); rows past offsets[-1] zeroed",
            "exact: the same contiguous rows-sorted-by-group layout and Linear-layout weights [G, N, K]",
        ),
        _cap(
            "grouped_gemm_masked",
            ["group_gemm"],
            "group_gemm over the [G*Mmax, K] rows with every m_list entry = Mmax, then rows >= counts[g] zeroed",
            "exact: padded rows are computed and discarded (Mmax is small in decode), so the valid rows need "
            "no gather into a contiguous layout",
        ),
        _cap(
            "moe_ffn",
            ["moe_gen_idx", "moe_expand_input", "group_gemm", "moe_combine_result"],
            "moe_gen_idx -> moe_expand_input -> group_gemm -> clamped SwiGLU (composed) -> group_gemm -> "
            "moe_combine_result",
            "tmo's moe_active has no SwiGLU clamp (limit 10), so the clamp is composed; the reference weights "
            "h before the W2 requant, so quantised experts weight before the second GEMM, not in combine",
        ),
        _cap(
            "mhc_sinkhorn",
            ["hc_split_sinkhorn"],
            "hc_split_sinkhorn(mixes, hc_scale, hc_base, hc_mult=4, sinkhorn_iter, eps)",
            "exact for hc_mult=4 (V4); the comb transpose is checked with the swap test",
        ),
        _cap(
            "mhc_pre",
            ["hc_split_sinkhorn"],
            "mixes GEMM (composed) then hc_split_sinkhorn -> (pre, post, comb)",
            "tmo splits pre/post/comb and runs Sinkhorn; the mixes GEMM and the weighted sum are composed",
        ),
        _cap(
            "mhc_post",
            ["fused_mhc_post"],
            "fused_mhc_post(x, residual, post, comb, compute_rms=False)",
            "output stream j takes column j of comb (checked with the swap test)",
            f"D = {FUSED_MHC_POST_D} and HC = {FUSED_MHC_POST_HC} only (V4-Flash); V4-Pro (D = 7168): "
            "reference composition",
        ),
        _cap("mhc_head", [], COMPOSITION, "tmo has no mHC head op"),
        _cap(
            "engram_hash",
            [],
            COMPOSITION + " (int64 aten ops)",
            "no vendor op exists; the int64 wrap-around multiply must be verified on the device",
        ),
        _cap(
            "engram_lookup",
            [],
            COMPOSITION + " (index_select + dequant)",
            "no vendor op exists; tables (~100 GB) live in host memory or shards",
        ),
        _cap("engram_gate", [], COMPOSITION, "no vendor op exists"),
        _cap(
            "fp8_quant",
            [],
            COMPOSITION,
            "tmo's scaled_quantize has no UE8M0 (power-of-two) 128-block scales",
        ),
        _cap("fp4_quant", [], COMPOSITION, "tmo has no FP4 e2m1 format"),
    )
}


def arch_from_name(name: str | None) -> str:
    """``mtp_372`` / ``mtp_592`` / ``mtp_613`` from a device name such as ``'MLU590-M9'``; else ``unknown``."""
    match = re.search(r"MLU\D?(\d)\d\d", name or "", re.IGNORECASE)
    if not match:
        return UNKNOWN
    series = int(match.group(1))
    return "mtp_372" if series <= 3 else "mtp_592" if series == 5 else "mtp_613"


def device_arch(device: torch.device) -> str:
    """The arch of an ``mlu`` device, from ``torch.mlu.get_device_name`` (``unknown`` where absent)."""
    get_name = getattr(getattr(torch, "mlu", None), "get_device_name", None)
    return UNKNOWN if get_name is None else _named_arch(get_name, device.index or 0)


@functools.cache
def _named_arch(get_name, index: int) -> str:
    """Cached per device: kernels ask on every call."""
    return arch_from_name(get_name(index))


def served_on(arch: str) -> bool:
    """tmo routes run on mtp_592 and newer; an unknown arch is treated as such (tmo fails loudly if not)."""
    return arch in SUPPORTED_ARCHES or arch == UNKNOWN


def route(op: str, arch: str) -> Route:
    """The route of ``op`` on ``arch``: ``kernel`` says what runs, ``reason`` why (not) tmo."""
    cap = TABLE[op]
    if not served_on(arch):
        return Route(f"{COMPOSITION} ({arch})", f"{op}: {MLU370_REASON}")
    if not cap.uses_tmo:
        return Route(COMPOSITION, f"{op}: not supported by tmo because {cap.why}")
    limits = f"; limits: {cap.limits}" if cap.limits else ""
    assumed = "device arch unknown, mtp_592 routes assumed; " if arch == UNKNOWN else ""
    return Route(f"torch_mlu_ops: {cap.route}", f"{assumed}{cap.why}{limits}")


def table() -> dict[str, dict[str, Route]]:
    """Every op by every arch: the full capability table."""
    return {op: {arch: route(op, arch) for arch in ARCHES} for op in TABLE}


def sqcka_heads_per_call(kv_dtype: torch.dtype) -> int:
    """Most query heads one single_query_cached_kv_attn call takes (seq_q = 1, one shared KV head)."""
    return SQCKA_HEADS_BF16_KV if kv_dtype == torch.bfloat16 else SQCKA_HEADS


def composition_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why no tmo op can serve a call on ``device`` in ``dtype`` (the composition runs instead), or None."""
    arch = device_arch(device)
    if not served_on(arch):
        return MLU370_REASON
    if dtype not in TMO_DTYPES:
        return f"tmo kernels take {', '.join(str(d).removeprefix('torch.') for d in TMO_DTYPES)}, not {dtype}"
    return None


def sparse_attn_composition_reason(q: torch.Tensor, pools: list[tuple[torch.Tensor, torch.Tensor]]) -> str | None:
    """Why a sparse_attn call cannot use tmo (then the reference composition runs on the device), or None."""
    reason = composition_reason(q.device, q.dtype)
    if reason is None and any(kv.shape[0] == 0 or idx.shape[1] == 0 for kv, idx in pools):
        reason = "an empty KV pool or a zero-width index leaves tmo nothing to read"
    return reason
