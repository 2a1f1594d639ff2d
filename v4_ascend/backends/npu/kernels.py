"""Ascend kernels: each maps one v4_ascend op onto torch_npu where :mod:`capabilities` says it is exact.

A call outside the vendor op's limits (or on a SoC where it is not documented) runs the reference
composition on the device tensors, never on the CPU; :func:`reference_fallbacks` counts those calls
per op and reason so the validation kit can show them.
"""

from __future__ import annotations

import functools
from collections import Counter

import torch
import torch_npu

from v4_ascend import _validation as v
from v4_ascend.backends.base import KernelTable, Route
from v4_ascend.backends.npu import capabilities, load_native
from v4_ascend.backends.npu.capabilities import Decision, Soc
from v4_ascend.reference import moe as moe_ref

TABLE = KernelTable("PrivateUse1")
VENDOR_VERSION = str(getattr(torch_npu, "__version__", "unknown"))
# The C++ glue's two-stage aclnnGroupedMatmulV4 call replaces the Python torch_npu call when built.
NATIVE_GMM = load_native() is not None

_fallbacks: Counter = Counter()


@functools.cache
def soc() -> Soc:
    """The SoC family of this process's NPU (detected once)."""
    return capabilities.detect_soc(torch_npu)


def reference_fallbacks() -> dict[tuple[str, str], int]:
    """Calls that the reference composition served on the device, per (op, reason)."""
    return dict(_fallbacks)


def _on_device_reference(op: str, reason: str, reference, *args):
    _fallbacks[(op, reason)] += 1
    return reference(*args)


def _description(op: str, how: str) -> str:
    entry = capabilities.route(op)
    via = "_C_npu aclnnGroupedMatmulV4 glue" if NATIVE_GMM else f"torch_npu {VENDOR_VERSION}"
    return (
        f"{entry.vendor_op} (via {via}; {how}); outside its limits ({entry.limits}) or on a SoC "
        f"without it, the reference composition runs on the device"
    )


def _grouped_matmul(x: torch.Tensor, w: torch.Tensor, group_ends: torch.Tensor) -> torch.Tensor:
    """``y[r] = x[r] @ w[g(r)].T`` over M-axis groups; ``group_ends`` int64 cumulative, last == rows of x."""
    # x may not be transposed; the weight goes in as the transposed view of a contiguous [G, N, K]
    # (documented as supported), so only inputs that arrive strided are copied.
    x, w = x.contiguous(), w.contiguous()
    if NATIVE_GMM:
        return torch.ops.v4_ascend._npu_grouped_matmul(x, w, group_ends)
    (y,) = torch_npu.npu_grouped_matmul(
        [x],
        [w.transpose(1, 2)],
        group_list=group_ends,
        split_item=3,  # 2 or 3: a single output tensor
        group_type=0,  # groups along M
        group_list_type=0,  # cumulative ends, our offsets convention
    )
    return y


@TABLE.kernel("grouped_gemm", _description("grouped_gemm", "M-axis groups, offsets as int64 cumulative group_list"))
def grouped_gemm(x, w, offsets):
    M, N = moe_ref.check_grouped_gemm(x, w, offsets)
    reason = capabilities.not_supported_reason("grouped_gemm", soc(), x, w, offsets)
    if reason is not None:
        return _on_device_reference("grouped_gemm", reason, moe_ref.grouped_gemm, x, w, offsets)
    # One small device-to-host copy validates the offsets and gives the rows the vendor op may see
    # (it requires group_list[-1] == rows of x, while our contract zero-fills rows past offsets[-1]).
    bounds = moe_ref.group_bounds(offsets.cpu(), M)
    rows = bounds[-1][1]
    if rows == 0:
        return x.new_zeros(M, N)
    y = _grouped_matmul(x[:rows], w, offsets.to(torch.int64))
    return y if rows == M else torch.cat([y, y.new_zeros(M - rows, N)])


@TABLE.kernel(
    "grouped_gemm_masked",
    _description("grouped_gemm_masked", "G uniform groups of Mmax rows, rows past counts zero-filled"),
)
def grouped_gemm_masked(x, w, counts):
    Mmax, N = moe_ref.check_grouped_gemm_masked(x, w, counts)
    reason = capabilities.not_supported_reason("grouped_gemm_masked", soc(), x, w, counts)
    if reason is not None:
        return _on_device_reference("grouped_gemm_masked", reason, moe_ref.grouped_gemm_masked, x, w, counts)
    G, _, K = x.shape
    v.index_range("grouped_gemm_masked", "counts", counts, Mmax + 1, allow_invalid=False)
    if G * Mmax == 0:
        return x.new_zeros(G, Mmax, N)
    ends = torch.arange(1, G + 1, dtype=torch.int64, device=x.device) * Mmax
    y = _grouped_matmul(x.reshape(G * Mmax, K), w, ends).view(G, Mmax, N)
    padding = torch.arange(Mmax, device=x.device)[None, :] >= counts[:, None]
    return y.masked_fill(padding[..., None], 0)


# Ops whose vendor route is not exact keep the reference composition, which runs on the device tensors.
for _entry in capabilities.ROUTES.values():
    if _entry.decision is Decision.REFERENCE:
        TABLE.not_served(
            _entry.op,
            f"the reference composition runs on the device: {_entry.vendor_op or 'no vendor op'} not used: "
            f"{_entry.why}",
        )


def routes() -> dict[str, Route]:
    """The table's routes, with what the detected SoC makes of each vendor-served op."""
    detected = soc()
    out = {}
    for op, entry in TABLE.routes().items():
        if entry.served:
            decision = capabilities.route(op).decision_on(detected)
            entry = Route(f"{entry.kernel} [detected {detected.label}: {decision.value}]", entry.reason)
        out[op] = entry
    return out
