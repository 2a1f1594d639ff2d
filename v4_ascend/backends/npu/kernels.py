"""Ascend kernels: each maps one v4_ascend op onto torch_npu where :mod:`.capabilities` says it is exact.

:data:`KERNELS` gates every call through the capability table: a call outside the vendor op's limits (or
on a SoC where it is not used) runs the reference composition on the device tensors, never on the CPU,
and is counted for the validation kit.
"""

from __future__ import annotations

import functools

import torch
import torch_npu

from v4_ascend import _validation as v
from v4_ascend.backends.npu import capabilities, load_native
from v4_ascend.backends.npu.capabilities import Soc
from v4_ascend.backends.vendor import VendorKernels
from v4_ascend.reference import moe as moe_ref

VENDOR_VERSION = str(getattr(torch_npu, "__version__", "unknown"))
# The C++ glue's two-stage aclnnGroupedMatmulV4 call replaces the Python torch_npu call when built.
NATIVE_GMM = load_native() is not None


@functools.cache
def soc() -> Soc:
    """The SoC family of this process's NPU (detected once)."""
    return capabilities.detect_soc(torch_npu)


KERNELS = VendorKernels(capabilities.CAPABILITIES, lambda device: soc())


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


@KERNELS.kernel("grouped_gemm", moe_ref.check_grouped_gemm)
def grouped_gemm(x, w, offsets):
    M, N = x.shape[0], w.shape[1]
    # One small device-to-host copy validates the offsets and gives the rows the vendor op may see
    # (it requires group_list[-1] == rows of x, while our contract zero-fills rows past offsets[-1]).
    bounds = moe_ref.group_bounds(offsets.cpu(), M)
    rows = bounds[-1][1]
    if rows == 0:
        return x.new_zeros(M, N)
    y = _grouped_matmul(x[:rows], w, offsets.to(torch.int64))
    return y if rows == M else torch.cat([y, y.new_zeros(M - rows, N)])


@KERNELS.kernel("grouped_gemm_masked", moe_ref.check_grouped_gemm_masked)
def grouped_gemm_masked(x, w, counts):
    G, Mmax, K = x.shape
    N = w.shape[1]
    v.index_range("grouped_gemm_masked", "counts", counts, Mmax + 1, allow_invalid=False)
    if G * Mmax == 0:
        return x.new_zeros(G, Mmax, N)
    ends = torch.arange(1, G + 1, dtype=torch.int64, device=x.device) * Mmax
    y = _grouped_matmul(x.reshape(G * Mmax, K), w, ends).view(G, Mmax, N)
    padding = torch.arange(Mmax, device=x.device)[None, :] >= counts[:, None]
    return y.masked_fill(padding[..., None], 0)
