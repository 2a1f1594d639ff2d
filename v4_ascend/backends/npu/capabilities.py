"""What each Ascend SoC's vendor ops can do for each v4_ascend op: the one place routes are decided.

:data:`CAPABILITIES` (a :class:`~v4_ascend.backends.vendor.CapabilityTable`) has one row per declared op:
the torch_npu / CANN op that was considered, where it exists, and either why it is exact for V4 or why
it is not used; its ``not_supported_reason`` is the per-call gate the kernels ask, and a call it refuses
runs the reference composition on the device tensors. Limits come from torch-npu 2.13.0's own API docs
(``torch_npu/_op_plugin_docs.py`` in the wheel) and ``vendors.md`` section 6.

Nothing here imports torch_npu: the SoC is passed in, or detected from a module given by the caller.
"""

from __future__ import annotations

import enum

import torch

from v4_ascend.backends.vendor import CapabilityTable, Decision, VendorRoute, reference_route


class Soc(str, enum.Enum):
    """Ascend SoC families that differ in vendor-op coverage."""

    A2 = "a2"  # Atlas A2: Ascend910B1..B4_1, arch 2201
    A3 = "a3"  # Atlas A3: Ascend910_93xx (910C), arch 2201
    A5 = "950"  # Ascend950PR / 950DT, arch 3510
    OTHER = "other"  # 910A, 310P, 310B, unknown: no V4-relevant vendor op is documented

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Soc.A2: "A2 (910B)",
    Soc.A3: "A3 (910C)",
    Soc.A5: "950PR/DT",
    Soc.OTHER: "other Ascend SoC",
}
ALL_SOCS = (Soc.A2, Soc.A3, Soc.A5)

# c10_npu::SocVersion values (torch_npu/csrc/core/npu/NpuVariables.h in the 2.13.0 wheel).
_SOC_VERSION_RANGES = ((220, 225, Soc.A2), (250, 256, Soc.A3), (260, 260, Soc.A5))


def soc_from_version(version: int) -> Soc:
    """Map ``torch_npu.npu.get_soc_version()`` (a ``c10_npu::SocVersion`` value) to a family."""
    for low, high, soc in _SOC_VERSION_RANGES:
        if low <= version <= high:
            return soc
    return Soc.OTHER


def soc_from_name(name: str) -> Soc:
    """Map ``torch.npu.get_device_name()`` (e.g. ``Ascend910B2``, ``Ascend910_9392``, ``Ascend950PR``)."""
    if name.startswith("Ascend950") or name.startswith("Ascend910_95"):
        return Soc.A5
    if name.startswith("Ascend910_93"):
        return Soc.A3
    if name.startswith("Ascend910B"):
        return Soc.A2
    return Soc.OTHER


def detect_soc(torch_npu_module) -> Soc:
    """The SoC family of the current device: SoC version first, the device name when that is unknown."""
    soc = soc_from_version(int(torch_npu_module.npu.get_soc_version()))
    if soc is Soc.OTHER:
        soc = soc_from_name(str(torch_npu_module.npu.get_device_name()))
    return soc


_GMM_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_GMM_MAX_GROUPS = 1024  # "group_list 第1维最大支持1024" (single-tensor weight, group_type 0)
_GMM_INNER_LIMIT = 65536  # "内轴限制 InnerLimit 为 65536": x's K and the transposed weight's K


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _gmm_limits(x: torch.Tensor, w: torch.Tensor) -> str | None:
    if x.dtype not in _GMM_DTYPES:
        return f"npu_grouped_matmul takes fp16/bf16/fp32, got {_dtype_name(x.dtype)}"
    groups, _, k = w.shape
    if groups > _GMM_MAX_GROUPS:
        return f"npu_grouped_matmul takes at most {_GMM_MAX_GROUPS} groups, got {groups}"
    if k >= _GMM_INNER_LIMIT:
        return f"npu_grouped_matmul needs K < {_GMM_INNER_LIMIT} (inner-axis limit), got K = {k}"
    return None


def _gmm_check(x: torch.Tensor, w: torch.Tensor, groups: torch.Tensor) -> str | None:
    """grouped_gemm (``groups`` = offsets) and grouped_gemm_masked (``groups`` = counts) share the limits."""
    return _gmm_limits(x, w)


_GMM_LIMITS = (
    f"dtypes fp16/bf16/fp32; groups <= {_GMM_MAX_GROUPS}; K < {_GMM_INNER_LIMIT}; weight passed transposed "
    "(documented as supported), x never transposed"
)


_NO_FP8_CUBE = "A2/A3 cubes have no FP8"
_V4_BLOCKS = "V4 scales are UE8M0 (power-of-two) per block with V4's rounding rule"

_ROUTES = (
    reference_route(
        "sparse_attn",
        "torch_npu.npu_sparse_flash_attention",
        "not exact for V4: one KV pool per call, so the window and compressed scopes of one softmax would need "
        "a per-call copy of both pools into one; sparse_indices must hold every valid slot before every invalid "
        "one, while V4 rows have -1 holes anywhere plus topk_length; bf16/fp16 only; and how `sinks` enters "
        "softmax_max/softmax_sum is not documented for 2.13.0, so the sink-free lse (and out = 0, lse = -inf "
        "for empty rows) cannot be guaranteed",
        ALL_SOCS,
    ),
    reference_route(
        "kv_compress_pool",
        "none in torch_npu (npu_nsa_compress is NSA pooling, not V4's)",
        "V4's softmax-gated pooling with the learned position bias (ape) and the overlapping window has no "
        "torch_npu op; _C_ascend.compressor fuses it with RMSNorm, RoPE and the cache write and has no "
        "pooling-only entry",
    ),
    reference_route(
        "kv_compress",
        "none in torch_npu (npu_nsa_compress is NSA pooling, not V4's); _C_ascend.compressor (vllm-ascend)",
        "torch_npu has no V4 compressor; the CANN custom op ships outside torch_npu (vllm-ascend / "
        "cann-recipes, A3 and 950, A2 binaries came late) and needs the C++ glue of _C_npu once its aclnn "
        "signature is pinned",
        (Soc.A3, Soc.A5),
    ),
    reference_route(
        "indexer_topk",
        "torch_npu.npu_lightning_indexer",
        "no ratio argument: V4 visibility i < (q_pos + 1) // ratio would need per-query key lengths, while "
        "sparse_mode=3 (right-down causal) aligns query and key positions 1:1, not 1:ratio (unverified on "
        "hardware); the tie order (lower index first) is not documented",
        ALL_SOCS,
    ),
    reference_route(
        "engram_hash", None,
        "no vendor op; the int64 aten composition runs on the device (wrap-around multiply to verify on hardware)",
    ),
    reference_route(
        "engram_lookup",
        "torch_npu.npu_gather_sparse_index",
        "no fused hash+gather+dequant; index_select + dequant on the device is already one gather; "
        "host-mapped tables (aclrtHostRegister) fail on A2",
        ALL_SOCS,
    ),
    reference_route(
        "engram_hash_lookup", None,
        "no vendor op fuses the hash with the gather; the composition (int64 aten hash, then index_select + "
        "dequant) runs on the device",
    ),
    reference_route("engram_gate", None, "no vendor op; elementwise aten composition"),
    reference_route(
        "mhc_sinkhorn",
        "torch_npu.npu_mhc_sinkhorn",
        "950PR/DT only (no A2/A3 binary, error 561103); the iteration order (V4 ends on a column pass) is "
        "unverified on hardware",
        (Soc.A5,),
    ),
    reference_route(
        "mhc_pre",
        "torch_npu.npu_mhc_pre",
        "950PR/DT only; n in {4, 6, 8} and D <= 16384, a multiple of 16 (unclear whether D or n*D: Pro has "
        "4*7168); how alpha/bias/gamma map onto V4's three scales and (2+n)*n bases is undocumented; unverified "
        "on hardware",
        (Soc.A5,),
    ),
    reference_route(
        "mhc_post",
        "torch_npu.npu_mhc_post",
        "950PR/DT only; whether output stream j takes column j of comb (the V4 convention) needs the swap "
        "test on hardware",
        (Soc.A5,),
    ),
    reference_route("mhc_head", None, "no vendor op; RMS-norm and sigmoid mix composition"),
    VendorRoute(
        "grouped_gemm",
        "torch_npu.npu_grouped_matmul",
        (Soc.A2, Soc.A3),
        Decision.VENDOR,
        "exact: group_type=0 (M-axis groups), group_list = our offsets as int64 cumulative row ends "
        "(group_list_type=0), one x / one [G, K, N] weight (our [G, N, K] transposed view) / one y "
        "(split_item=3); rows at or past offsets[-1] are not passed (the vendor needs the last value to equal "
        "x's rows) and are zero-filled; not documented for 950 in torch-npu 2.13.0",
        limits=_GMM_LIMITS,
        check=_gmm_check,
    ),
    VendorRoute(
        "grouped_gemm_masked",
        "torch_npu.npu_grouped_matmul",
        (Soc.A2, Soc.A3),
        Decision.VENDOR,
        "exact: x [G, Mmax, K] viewed as G groups of Mmax rows (group_list = Mmax, 2Mmax, ... as int64, "
        "group_list_type=0), then rows past counts[g] are zero-filled; the padded rows cost compute but no "
        "gather or host sync (a counts-derived group_list would need the valid rows compacted first)",
        limits=_GMM_LIMITS,
        check=_gmm_check,
    ),
    reference_route(
        "moe_route",
        "torch_npu.npu_moe_gating_top_k",
        "norm_type covers softmax and sigmoid only: V4 scores are sqrt(softplus(logits)), which has no mode",
        (Soc.A2, Soc.A3),
    ),
    reference_route(
        "moe_dispatch",
        "torch_npu.npu_moe_init_routing_v2",
        "expert_idx must lie in [0, expert_num): the -1 slots of expert parallelism are not a documented input; "
        "V4's rows keep (token, slot) order inside each expert and its slots map rows back, while the order "
        "inside an expert and the expanded_row_idx direction per row_idx_type are unverified on hardware",
        (Soc.A2, Soc.A3),
    ),
    reference_route(
        "moe_combine",
        "torch_npu.npu_moe_token_unpermute / npu_moe_finalize_routing",
        "npu_moe_finalize_routing is A2 only; neither documents dropped (-1) slots nor the accumulation dtype "
        "of the weighted sum, which V4 does in fp32",
        (Soc.A2, Soc.A3),
    ),
    reference_route(
        "moe_swiglu",
        "torch_npu.npu_swiglu",
        "no clamp: V4 clamps gate from above and up to +-limit before silu(gate) * up; no per-row routing weight",
        ALL_SOCS,
    ),
    reference_route(
        "moe_ffn",
        "torch_npu.npu_moe_init_routing_v2 -> npu_grouped_matmul -> npu_swiglu -> npu_moe_token_unpermute",
        "npu_swiglu has no clamp (V4 clamps up to +-10 and gate from above); the routing weight must multiply h "
        "before the W2 requant, not at finalize; npu_moe_finalize_routing is A2 only; the composition uses "
        "the grouped_gemm route for both GEMMs",
        (Soc.A2, Soc.A3),
    ),
    reference_route(
        "fp8_quant",
        "torch_npu.npu_dynamic_quant / npu_dynamic_mx_quant",
        f"{_V4_BLOCKS} (128 elements); the vendor dynamic quant uses fp32 per-token scales ({_NO_FP8_CUBE}; "
        "950's MXFP8 has its own block rule)",
        (Soc.A5,),
    ),
    reference_route(
        "fp8_dequant",
        "torch_npu.npu_anti_quant",
        "per-channel or per-tensor scales only: V4's UE8M0 scale per 128-element block is a broadcast multiply, "
        "which the composition already is",
        ALL_SOCS,
    ),
    reference_route("fp8_fake_quant", None, "no vendor op; quantise-dequantise round trip of fp8_quant's rule"),
    reference_route(
        "fp4_quant",
        "torch_npu.npu_dynamic_mx_quant (MXFP4)",
        "no FP4 e2m1 on A2/A3; 950's MXFP4 block layout is not V4's packed e2m1 with UE8M0 per 32 as specified",
        (Soc.A5,),
    ),
    reference_route(
        "fp4_dequant", None,
        "no FP4 e2m1 on A2/A3 and no documented unpack of V4's packed e2m1 with UE8M0 per 32 on 950",
    ),
    reference_route("fp4_fake_quant", None, "no vendor op; quantise-dequantise round trip of fp4_quant's rule"),
    reference_route(
        "fp8_weight_quant",
        "torch_npu.npu_dynamic_mx_quant",
        f"{_V4_BLOCKS} (128x128 weight tiles); MX formats use 1x32 blocks ({_NO_FP8_CUBE}); V4 checkpoints are "
        "converted at load time (vllm-ascend deploys Flash as w8a8)",
        (Soc.A5,),
    ),
    reference_route(
        "fp8_weight_dequant",
        "torch_npu.npu_anti_quant",
        "per-channel or per-tensor scales only: V4's 128x128 UE8M0 tiles are a broadcast multiply, which the "
        "composition already is",
        ALL_SOCS,
    ),
    reference_route(
        "fp8_weight_fake_quant", None, "no vendor op; quantise-dequantise round trip of fp8_weight_quant's rule",
    ),
    reference_route(
        "hadamard_rotate", None,
        "no standalone torch_npu op (the rotation is fused inside the quantised lightning-indexer ops only); "
        "the composition is one matmul with the Sylvester matrix",
    ),
)

CAPABILITIES = CapabilityTable("Ascend", _ROUTES, ALL_SOCS, lambda soc: soc.label)
