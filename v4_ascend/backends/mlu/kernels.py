"""Cambricon kernels: each maps one v4_ascend op onto torch_mlu_ops, with why the mapping is exact."""

from __future__ import annotations

import torch
import torch_mlu_ops

from v4_ascend.backends.base import KernelTable
from v4_ascend.reference import moe as moe_ref

TABLE = KernelTable("PrivateUse1")


@TABLE.kernel(
    "grouped_gemm",
    "torch_mlu_ops.group_gemm (rows sorted by expert, per-group row counts m_list): same layout",
)
def grouped_gemm(x, w, offsets):
    M, N = moe_ref.check_grouped_gemm(x, w, offsets)
    ends = offsets.to(torch.int32)
    counts = torch.diff(ends, prepend=ends.new_zeros(1))
    y = torch_mlu_ops.group_gemm(x, w, counts, None, None, None, None, M)
    tail = torch.arange(M, device=x.device) >= ends[-1:]
    return y.masked_fill(tail[:, None], 0)
