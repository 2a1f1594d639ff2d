"""What Cambricon MLUs serve through torch_mlu_ops (tmo), per op and per arch, and why.

:data:`CAPABILITIES` (a :class:`~v4_ascend.backends.vendor.CapabilityTable`) has one row per declared op:
the tmo ops considered, why the route is exact for V4 (or why V4 needs the on-device reference
composition), and the per-call limits that send a call to the composition. The kernels in
:mod:`.kernels` take their decisions from here, so the report and the code cannot disagree.

Archs: ``mtp_592`` (MLU580/MLU590, the DeepSeek target) and newer (``mtp_613``) get the tmo routes;
``mtp_372`` (MLU370) is unsupported: every op runs the reference composition on the device (never on
the CPU).
"""

from __future__ import annotations

import functools
import re

import torch

from v4_ascend.backends.vendor import CapabilityTable, Decision, VendorRoute, reference_route

ARCHES = ("mtp_372", "mtp_592", "mtp_613")
SUPPORTED_ARCHES = ("mtp_592", "mtp_613")
UNKNOWN = "unknown"

MLU370_REASON = (
    "MLU370 (mtp_372) is not supported: vllm-mlu does not support it, mlu-ops dropped it and tmo's V4 "
    "kernels target mtp_592 and newer"
)

# single_query_cached_kv_attn: seq_q * (H_q / H_kv) must stay within this per call (vendors.md section 6).
SQCKA_HEADS = 128
SQCKA_HEADS_BF16_KV = 256
# fused_mhc_post is built for V4-Flash only.
FUSED_MHC_POST_D, FUSED_MHC_POST_HC = 4096, 4
# hc_split_sinkhorn: V4's hc_mult (its default; other values are not documented).
HC_SPLIT_SINKHORN_HC = 4
# Floating types tmo's GEMM and attention kernels take (no fp64).
TMO_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


_LABELS = {"mtp_372": "MLU370 (mtp_372)", "mtp_592": "MLU580/590 (mtp_592)", "mtp_613": "mtp_613",
           UNKNOWN: "unknown MLU arch (mtp_592 routes assumed)"}
# tmo routes run on mtp_592 and newer; an unknown arch is treated as such (tmo fails loudly if not).
TMO_ARCHES = (*SUPPORTED_ARCHES, UNKNOWN)


def _dtype_reason(dtype: torch.dtype, takes=TMO_DTYPES) -> str | None:
    if dtype in takes:
        return None
    return f"tmo takes {', '.join(str(d).removeprefix('torch.') for d in takes)} here, not {dtype}"


def _grouped_gemm_check(x, w, offsets) -> str | None:
    if x.shape[0] == 0 or w.shape[0] == 0:
        return "no rows or no groups: nothing for group_gemm to compute"
    return _dtype_reason(x.dtype)


def _grouped_gemm_masked_check(x, w, counts) -> str | None:
    if x.shape[0] * x.shape[1] == 0:
        return "no groups or no rows: nothing for group_gemm to compute"
    return _dtype_reason(x.dtype)


def _sparse_attn_check(q, kv, idx, sink, scale, extra_kv=None, extra_idx=None, topk_length=None,
                       extra_topk_length=None) -> str | None:
    pools = [(kv, idx)] + ([(extra_kv, extra_idx)] if extra_kv is not None else [])
    if any(pool.shape[0] == 0 or index.shape[1] == 0 for pool, index in pools):
        return "an empty KV pool or a zero-width index leaves tmo nothing to read"
    return _dtype_reason(q.dtype)


def _moe_route_check(logits, topk, route_scale, bias=None, token_ids=None, tid2eid=None) -> str | None:
    if logits.shape[0] == 0:
        return "no tokens to route"
    if bias is not None and bias.dtype != torch.float32:
        return f"moe_softplus_topk selects with an fp32 bias, not {bias.dtype}"
    return _dtype_reason(logits.dtype, (torch.float32,))


def _mhc_pre_check(x, fn, scale, base, iters=20, norm_eps=1e-6, hc_eps=1e-6) -> str | None:
    if x.shape[1] != HC_SPLIT_SINKHORN_HC:
        return f"hc_split_sinkhorn is used with hc_mult = {HC_SPLIT_SINKHORN_HC} only, got n = {x.shape[1]}"
    if x.shape[0] == 0:
        return "no tokens"
    return _dtype_reason(x.dtype)


def _mhc_post_check(f, x, post, comb) -> str | None:
    T, n, D = x.shape
    if (n, D) != (FUSED_MHC_POST_HC, FUSED_MHC_POST_D):
        return (f"fused_mhc_post is built for HC = {FUSED_MHC_POST_HC}, D = {FUSED_MHC_POST_D} only "
                f"(V4-Flash), got n = {n}, D = {D}")
    if T == 0:
        return "no tokens"
    return _dtype_reason(x.dtype)


def _tmo_route(op, vendor_op, why, limits, check) -> VendorRoute:
    return VendorRoute(op, vendor_op, TMO_ARCHES, Decision.VENDOR, why, limits, check)


_FP8_BLOCKS = "tmo's scaled_quantize / scaled_matmul scales are per token, per channel or group-wise, not UE8M0"

_ROUTES = (
    _tmo_route(
        "sparse_attn",
        "single_query_cached_kv_attn (learnable_sink)",
        "exact: each query token is one single-query request over a block_size-1 paged view of the pool (block "
        "table = its valid indices, compacted); one softmax over the listed entries with exp(sink) in the "
        "denominator; lse is tmo's logsumexp of the scaled logits (sink excluded); a second pool (extra_kv) is "
        "a second call without sink, merged by LSE; empty rows are set to out 0 / lse -inf. flash_attention "
        "(prefill) is not used: it reads contiguous K/V per sequence, not per-token index sets, and has no sink",
        f"heads per call <= {SQCKA_HEADS} ({SQCKA_HEADS_BF16_KV} with bf16 KV): more heads are split into "
        "several calls, each with its slice of the sink (vllm-mlu's split drops the sink); fp16/bf16/fp32; "
        "an empty pool or a zero-width index: reference composition",
        _sparse_attn_check,
    ),
    reference_route(
        "kv_compress_pool",
        "fused_compress_multi_kv",
        "not mapped: it pools per sequence from cu_seqlens and writes tmo's own fp32 state layout "
        "[B, coff*ratio, coff*head_dim], while kv_compress_pool pools whole windows of one sequence with no "
        "state; the mapping of overlap and of the ape bias is not contract-tested",
        TMO_ARCHES,
    ),
    reference_route(
        "kv_compress",
        "fused_compress_multi_kv (prefill) / fused_compress_single_kv (decode)",
        "not mapped yet: tmo's fp32 state [B, coff*ratio, coff*head_dim] is our kv_state/score_state layout, "
        "but fused_compress_multi_kv's batch_ids / cu_seqlens conventions, its state write-back and the order of "
        "its compressed rows are known only from vllm-mlu's call, not contract-tested here; fused_compress_single_kv "
        "also fuses RMSNorm, RoPE, Hadamard and the paged cache write, which kv_compress leaves to later ops; the "
        "signature changed between releases (a paged state_cache + state_bt variant exists)",
        TMO_ARCHES,
    ),
    reference_route(
        "indexer_topk",
        "fused_indexer_q + masked_indexer_select_paged_kv",
        "not mapped: masked_indexer_select_paged_kv returns a sparse block table and lengths for the paged "
        "cache, not the top-k compressed indices; its tie order (V4: lower index first, bit-exact) is "
        "undocumented; fused_indexer_q fuses the q projection and RoPE (V4: tail RoPE, rope_at_front=False)",
        TMO_ARCHES,
    ),
    reference_route(
        "engram_hash", None, "no vendor op exists; the int64 wrap-around multiply must be verified on the device",
    ),
    reference_route(
        "engram_lookup", None, "no vendor op exists (index_select + dequant); tables (~100 GB) live in host "
        "memory or shards",
    ),
    reference_route(
        "engram_hash_lookup", None, "no vendor op exists; the composition (int64 aten hash, then index_select "
        "+ dequant) runs on the device",
    ),
    reference_route("engram_gate", None, "no vendor op exists"),
    reference_route(
        "mhc_sinkhorn",
        "hc_split_sinkhorn",
        "tmo's Sinkhorn is only reachable inside hc_split_sinkhorn, with the scale/base and pre/post split of "
        "mhc_pre (which uses it) and hc_mult = 4; the standalone op takes any n",
        TMO_ARCHES,
    ),
    _tmo_route(
        "mhc_pre",
        "hc_split_sinkhorn",
        "exact (assumed from vllm-mlu, where it replaces V4's hc_split_sinkhorn): pre = sigmoid(mixes * "
        "scale[0] + base) + eps, post = 2 * sigmoid(mixes * scale[1] + base), comb = Sinkhorn(softmax + eps, "
        "then a column pass and iters - 1 row/column passes), eps = hc_eps, pre_scale None; the normalised "
        "mixes GEMM before it and the pre-weighted stream sum after it are composed on the device",
        f"hc_mult = n = {HC_SPLIT_SINKHORN_HC}; fp16/bf16/fp32 streams; mixes, scale and base passed as fp32",
        _mhc_pre_check,
    ),
    _tmo_route(
        "mhc_post",
        "fused_mhc_post",
        "exact (assumed from vllm-mlu, where it replaces V4's hc_post(x, residual, post, comb)): out[j] = "
        "post[j] * f + sum_i comb[i, j] * x[i], so output stream j takes column j of comb (the swap test in "
        "the contract test and the kit checks the orientation); compute_rms=False",
        f"D = {FUSED_MHC_POST_D} and HC = {FUSED_MHC_POST_HC} only (V4-Flash; V4-Pro's D = 7168 runs the "
        "reference composition); fp16/bf16/fp32 streams; post and comb passed as fp32",
        _mhc_post_check,
    ),
    reference_route("mhc_head", None, "tmo has no mHC head op"),
    _tmo_route(
        "grouped_gemm",
        "group_gemm",
        "exact: group_gemm(a=x, b=w, m_list=diff(offsets)) over the same contiguous rows-sorted-by-group layout "
        "and Linear-layout weights [G, N, K]; rows past offsets[-1] (not written by tmo) are zeroed",
        "fp16/bf16/fp32; no rows or no groups: reference composition",
        _grouped_gemm_check,
    ),
    _tmo_route(
        "grouped_gemm_masked",
        "group_gemm",
        "exact: group_gemm over the [G*Mmax, K] rows with every m_list entry = Mmax, then rows >= counts[g] "
        "zeroed; padded rows are computed and discarded (Mmax is small in decode), so the valid rows need no "
        "gather into a contiguous layout",
        "fp16/bf16/fp32; no groups or no rows: reference composition",
        _grouped_gemm_masked_check,
    ),
    _tmo_route(
        "moe_route",
        "moe_softplus_topk",
        "exact (tmo's documented math, as vllm-mlu's V4 gate uses it): scores sqrt(softplus(logits)), bias "
        "added for selection only, hash routing takes tid2eid[input_ids] in its column order, weights = the "
        "picked scores renormalised and times route_scale; assumed, to be confirmed by the kit's tie case on "
        "hardware: experts in descending score order, equal scores to the lower expert index",
        "fp32 logits and bias (fp64: reference composition); called by keyword (the argument order differs "
        "between tmo copies); token_ids and tid2eid passed as int32",
        _moe_route_check,
    ),
    reference_route(
        "moe_dispatch",
        "moe_gen_idx + moe_expand_input",
        "not mapped: moe_gen_idx takes expert ids in [0, expert_num) only (no -1 slots of expert parallelism) "
        "and its order inside an expert is undocumented, while V4's rows keep (token, slot) order and its slots "
        "map rows back",
        TMO_ARCHES,
    ),
    reference_route(
        "moe_combine",
        "moe_combine_result",
        "not mapped: it takes moe_gen_idx's gather ids and cusum, not V4's slots with -1 holes, and its "
        "accumulation dtype is undocumented (V4 sums in fp32)",
        TMO_ARCHES,
    ),
    reference_route(
        "moe_swiglu", "moe_active", "moe_active has no SwiGLU clamp (V4 clamps gate from above and up to "
        "+-limit) and no per-row weight", TMO_ARCHES,
    ),
    reference_route(
        "moe_ffn",
        "moe_gen_idx -> moe_expand_input -> group_gemm -> moe_active -> group_gemm -> moe_combine_result",
        "tmo's moe_active has no SwiGLU clamp (limit 10) and the reference weights h before the W2 requant, not "
        "in moe_combine_result; the composition uses the moe_route and grouped_gemm routes",
        TMO_ARCHES,
    ),
    reference_route(
        "fp8_quant", "scaled_quantize", f"{_FP8_BLOCKS} (power-of-two) per 128-element block", TMO_ARCHES,
    ),
    reference_route("fp8_dequant", None, f"no tmo dequant op; {_FP8_BLOCKS} blocks"),
    reference_route("fp8_fake_quant", None, "no vendor op; quantise-dequantise round trip of fp8_quant's rule"),
    reference_route("fp4_quant", None, "tmo has no FP4 e2m1 format (its 4-bit type is int4x2)"),
    reference_route("fp4_dequant", None, "tmo has no FP4 e2m1 format (its 4-bit type is int4x2)"),
    reference_route("fp4_fake_quant", None, "no vendor op; quantise-dequantise round trip of fp4_quant's rule"),
    reference_route(
        "fp8_weight_quant", "scaled_quantize", f"{_FP8_BLOCKS} 128x128 weight tiles", TMO_ARCHES,
    ),
    reference_route("fp8_weight_dequant", None, f"no tmo dequant op; {_FP8_BLOCKS} 128x128 weight tiles"),
    reference_route(
        "fp8_weight_fake_quant", None, "no vendor op; quantise-dequantise round trip of fp8_weight_quant's rule",
    ),
    reference_route(
        "hadamard_rotate", None,
        "no standalone tmo op (fused_compress_single_kv and fused_indexer_q take a hadamard_matrix inside their "
        "fusions only); the composition is one matmul with the Sylvester matrix",
    ),
)

CAPABILITIES = CapabilityTable(
    "Cambricon", _ROUTES, ARCHES, _LABELS.__getitem__,
    lambda arch: MLU370_REASON if arch == "mtp_372" else None,
)

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


def sqcka_heads_per_call(kv_dtype: torch.dtype) -> int:
    """Most query heads one single_query_cached_kv_attn call takes (seq_q = 1, one shared KV head)."""
    return SQCKA_HEADS_BF16_KV if kv_dtype == torch.bfloat16 else SQCKA_HEADS


