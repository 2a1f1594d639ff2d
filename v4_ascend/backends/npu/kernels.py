"""Ascend kernels: each maps one v4_ascend op onto torch_npu, with why the mapping is exact."""

from __future__ import annotations

import torch
import torch_npu

from v4_ascend.backends.base import KernelTable
from v4_ascend.reference import moe as moe_ref

TABLE = KernelTable("PrivateUse1")


@TABLE.kernel(
    "grouped_gemm",
    "torch_npu.npu_grouped_matmul (M-axis groups, cumulative int64 group_list): same contiguous layout",
)
def grouped_gemm(x, w, offsets):
    M, _ = moe_ref.check_grouped_gemm(x, w, offsets)
    (y,) = torch_npu.npu_grouped_matmul(
        [x],
        [w.transpose(1, 2)],
        group_list=offsets.to(torch.int64),
        split_item=3,
        group_type=0,
        group_list_type=0,
    )
    # The vendor leaves rows past the last group undefined; the contract makes them zero.
    tail = torch.arange(M, device=x.device) >= offsets[-1:].to(torch.int64)
    return y.masked_fill(tail[:, None], 0)
