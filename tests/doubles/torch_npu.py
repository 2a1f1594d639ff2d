"""Test double of ``torch_npu`` (contract tests only): documented semantics + call recording."""

from __future__ import annotations

from collections import Counter

import torch

calls: Counter = Counter()
last_kwargs: dict = {}


def npu_grouped_matmul(x, weight, *, group_list=None, split_item=0, group_type=None, group_list_type=0, **kwargs):
    """Documented: M-axis grouping (group_type 0) of x[0] by group_list; weight[0] is [G, K, N]."""
    calls["npu_grouped_matmul"] += 1
    last_kwargs["npu_grouped_matmul"] = dict(
        group_list=group_list, split_item=split_item, group_type=group_type, group_list_type=group_list_type
    )
    assert isinstance(x, list) and isinstance(weight, list), "x and weight are tensor lists"
    assert group_type == 0 and split_item in (2, 3)
    assert group_list.dtype == torch.int64, "group_list must be int64"
    a, b = x[0], weight[0]
    counts = group_list if group_list_type == 1 else torch.diff(group_list, prepend=group_list.new_zeros(1))
    out = torch.empty(a.shape[0], b.shape[2], dtype=a.dtype, device=a.device)
    row = 0
    for g, n in enumerate(counts.tolist()):
        out[row:row + n] = (a[row:row + n].float() @ b[g].float()).to(a.dtype)
        row += n
    return [out]
