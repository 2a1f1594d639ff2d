"""What each Ascend SoC's vendor ops can do for each v4_ascend op: the one place routes are decided.

For every op of ``ops.md`` (declared on this branch or not) an :class:`OpRoute` names the torch_npu /
CANN op that was considered, where it exists, and either why it is exact for V4 or why it is not used.
:func:`not_supported_reason` is the per-call gate (in the spirit of xformers' ``not_supported_reasons``):
given an op, its concrete arguments and the SoC, it returns ``None`` when the vendor route may serve
the call, else a readable "not supported because ..." reason; kernels then run the reference
composition on the device tensors instead. Limits come from torch-npu 2.13.0's own API docs
(``torch_npu/_op_plugin_docs.py`` in the wheel) and ``vendors.md`` section 6.

Nothing here imports torch_npu: the SoC is passed in, or detected from a module given by the caller.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import torch


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


class Decision(str, enum.Enum):
    VENDOR = "vendor-fused"  # the vendor op serves calls inside its limits; exact for V4
    REFERENCE = "reference composition"  # the vendor op (if any) is not exact for V4, or was not verified


# A per-call limit check: (args, kwargs) of the v4_ascend op -> None or why the vendor op cannot serve it.
LimitCheck = Callable[..., "str | None"]


@dataclass(frozen=True)
class OpRoute:
    """How the Ascend backend serves one v4_ascend op."""

    op: str
    vendor_op: str | None  # the torch_npu / CANN op considered ("none" when no vendor op exists)
    socs: tuple[Soc, ...]  # SoCs where the vendor op is documented
    decision: Decision
    why: str  # why the vendor op is exact (VENDOR) or why it is not used (REFERENCE)
    limits: str = ""  # the per-call limits of the vendor route, in words
    check: LimitCheck | None = None

    def decision_on(self, soc: Soc) -> Decision:
        return self.decision if soc in self.socs else Decision.REFERENCE


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


def _grouped_gemm_check(x, w, offsets) -> str | None:
    return _gmm_limits(x, w)


def _grouped_gemm_masked_check(x, w, counts) -> str | None:
    return _gmm_limits(x, w)


_GMM_LIMITS = (
    f"dtypes fp16/bf16/fp32; groups <= {_GMM_MAX_GROUPS}; K < {_GMM_INNER_LIMIT}; weight passed transposed "
    "(documented as supported), x never transposed"
)

_ROUTES = (
    OpRoute(
        "sparse_attn",
        "torch_npu.npu_sparse_flash_attention",
        ALL_SOCS,
        Decision.REFERENCE,
        "not exact for V4: one KV pool per call, so the window and compressed scopes of one softmax would need "
        "a per-call copy of both pools into one; sparse_indices must hold every valid slot before every invalid "
        "one, while V4 rows have -1 holes anywhere plus topk_length; bf16/fp16 only; and how `sinks` enters "
        "softmax_max/softmax_sum is not documented for 2.13.0, so the sink-free lse (and out = 0, lse = -inf "
        "for empty rows) cannot be guaranteed",
        limits="would need: bf16/fp16, D = 512 shared K=V, one scope, trailing invalid slots, documented sink LSE",
    ),
    OpRoute(
        "kv_compress",
        "none in torch_npu (npu_nsa_compress is NSA pooling, not V4's); _C_ascend.compressor (vllm-ascend)",
        (Soc.A3, Soc.A5),
        Decision.REFERENCE,
        "torch_npu has no V4 compressor; the CANN custom op ships outside torch_npu (vllm-ascend / "
        "cann-recipes, A3 and 950, A2 binaries came late) and needs the C++ glue of _C_npu once its aclnn "
        "signature is pinned",
    ),
    OpRoute(
        "indexer_topk",
        "torch_npu.npu_lightning_indexer",
        ALL_SOCS,
        Decision.REFERENCE,
        "no ratio argument: V4 visibility i < (q_pos + 1) // ratio would need per-query key lengths, while "
        "sparse_mode=3 (right-down causal) aligns query and key positions 1:1, not 1:ratio (unverified on "
        "hardware); the tie order (lower index first) is not documented",
    ),
    OpRoute(
        "engram_hash",
        None,
        (),
        Decision.REFERENCE,
        "no vendor op; the int64 aten composition runs on the device (wrap-around multiply to verify on hardware)",
    ),
    OpRoute(
        "engram_lookup",
        "torch_npu.npu_gather_sparse_index",
        ALL_SOCS,
        Decision.REFERENCE,
        "no fused hash+gather+dequant; index_select + dequant on the device is already one gather; "
        "host-mapped tables (aclrtHostRegister) fail on A2",
    ),
    OpRoute("engram_gate", None, (), Decision.REFERENCE, "no vendor op; elementwise aten composition"),
    OpRoute(
        "moe_route",
        "torch_npu.npu_moe_gating_top_k",
        (Soc.A2, Soc.A3),
        Decision.REFERENCE,
        "norm_type covers softmax and sigmoid only: V4 scores are sqrt(softplus(logits)), which has no mode",
    ),
    OpRoute(
        "grouped_gemm",
        "torch_npu.npu_grouped_matmul",
        (Soc.A2, Soc.A3),
        Decision.VENDOR,
        "exact: group_type=0 (M-axis groups), group_list = our offsets as int64 cumulative row ends "
        "(group_list_type=0), one x / one [G, K, N] weight (our [G, N, K] transposed view) / one y "
        "(split_item=3); rows at or past offsets[-1] are not passed (the vendor needs the last value to equal "
        "x's rows) and are zero-filled; not documented for 950 in torch-npu 2.13.0",
        limits=_GMM_LIMITS,
        check=_grouped_gemm_check,
    ),
    OpRoute(
        "grouped_gemm_masked",
        "torch_npu.npu_grouped_matmul",
        (Soc.A2, Soc.A3),
        Decision.VENDOR,
        "exact: x [G, Mmax, K] viewed as G groups of Mmax rows (group_list = Mmax, 2Mmax, ... as int64, "
        "group_list_type=0), then rows past counts[g] are zero-filled; the padded rows cost compute but no "
        "gather or host sync (a counts-derived group_list would need the valid rows compacted first)",
        limits=_GMM_LIMITS,
        check=_grouped_gemm_masked_check,
    ),
    OpRoute(
        "moe_ffn",
        "torch_npu.npu_moe_init_routing_v2 -> npu_grouped_matmul -> npu_swiglu -> npu_moe_token_unpermute",
        (Soc.A2, Soc.A3),
        Decision.REFERENCE,
        "npu_swiglu has no clamp (V4 clamps up to +-10 and gate from above); the routing weight must multiply h "
        "before the W2 requant, not at finalize; npu_moe_finalize_routing is A2 only; the composition uses "
        "the grouped_gemm route for both GEMMs",
    ),
    OpRoute(
        "mhc_sinkhorn",
        "torch_npu.npu_mhc_sinkhorn",
        (Soc.A5,),
        Decision.REFERENCE,
        "950PR/DT only (no A2/A3 binary, error 561103); the iteration order (V4 ends on a column pass) is "
        "unverified on hardware",
    ),
    OpRoute(
        "mhc_pre",
        "torch_npu.npu_mhc_pre",
        (Soc.A5,),
        Decision.REFERENCE,
        "950PR/DT only; n in {4, 6, 8} and D <= 16384, a multiple of 16 (unclear whether D or n*D: Pro has "
        "4*7168); unverified on hardware",
    ),
    OpRoute(
        "mhc_post",
        "torch_npu.npu_mhc_post",
        (Soc.A5,),
        Decision.REFERENCE,
        "950PR/DT only; whether output stream j takes column j of comb (the V4 convention) needs the swap "
        "test on hardware",
    ),
    OpRoute("mhc_head", None, (), Decision.REFERENCE, "no vendor op; RMS-norm and sigmoid mix composition"),
    OpRoute(
        "fp8_quant",
        "torch_npu.npu_dynamic_quant / npu_dynamic_mx_quant",
        (Soc.A5,),
        Decision.REFERENCE,
        "V4 scales are UE8M0 (power-of-two) per 128-element block with V4's rounding rule; the vendor dynamic "
        "quant uses fp32 per-token scales (A2/A3 cubes have no FP8; 950's MXFP8 has its own block rule)",
    ),
    OpRoute(
        "fp4_quant",
        "torch_npu.npu_dynamic_mx_quant (MXFP4)",
        (Soc.A5,),
        Decision.REFERENCE,
        "no FP4 e2m1 on A2/A3; 950's MXFP4 block layout is not V4's packed e2m1 with UE8M0 per 32 as specified",
    ),
)

ROUTES: dict[str, OpRoute] = {route.op: route for route in _ROUTES}


def route(op: str) -> OpRoute:
    try:
        return ROUTES[op]
    except KeyError:
        raise KeyError(f"no Ascend route is recorded for op '{op}'") from None


def not_supported_reason(op: str, soc: Soc, *args, **kwargs) -> str | None:
    """None when ``op``'s vendor route on ``soc`` may serve this call, else why not (readable)."""
    entry = route(op)
    if entry.decision is Decision.REFERENCE:
        return f"{entry.vendor_op or 'no vendor op'} not used: {entry.why}"
    if soc not in entry.socs:
        where = ", ".join(s.label for s in entry.socs)
        return f"{entry.vendor_op} is documented for {where} only, not for {soc.label}"
    return entry.check(*args, **kwargs) if entry.check is not None else None


def markdown_table() -> str:
    """The per-op, per-SoC route table (docs/ascend.md embeds it; a test keeps the two equal)."""
    head = "| op | vendor op considered | " + " | ".join(s.label for s in ALL_SOCS) + " | why |"
    lines = [head, "|" + "---|" * (len(ALL_SOCS) + 3)]
    for entry in _ROUTES:
        cells = [entry.decision_on(soc).value for soc in ALL_SOCS]
        vendor = f"`{entry.vendor_op}`" if entry.vendor_op else "none"
        why = entry.why + "." + (f" Limits: {entry.limits}." if entry.limits else "")
        lines.append(f"| `{entry.op}` | {vendor} | " + " | ".join(cells) + f" | {why} |")
    return "\n".join(lines)
