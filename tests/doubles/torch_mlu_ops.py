"""Test double of ``torch_mlu_ops`` (contract tests only): documented semantics + call recording."""

from __future__ import annotations

from collections import Counter

import torch

calls: Counter = Counter()
last_args: dict = {}


def group_gemm(a, b, m_list, expand_idx, c, alpha, beta, max_m):
    """Documented: rows of ``a`` grouped by expert with per-group counts ``m_list``; b is [E, N, K]."""
    calls["group_gemm"] += 1
    last_args["group_gemm"] = (m_list, max_m)
    assert m_list.dtype == torch.int32, "m_list must be int32"
    assert expand_idx is None and c is None
    out = torch.empty(a.shape[0], b.shape[1], dtype=a.dtype, device=a.device)
    row = 0
    for g, n in enumerate(m_list.tolist()):
        out[row:row + n] = (a[row:row + n].float() @ b[g].float().T).to(a.dtype)
        row += n
    return out
