"""Reference kernels of the MoE family: grouped GEMMs."""

from __future__ import annotations

import torch

from v4_ascend import _validation as v
from v4_ascend.reference.attention import accumulation_dtype


def check_grouped_gemm(x, w, offsets):
    op = "grouped_gemm"
    v.tensor(op, "x", x, rank=2, dtypes=v.FLOAT_DTYPES)
    M, K = x.shape
    v.tensor(op, "w", w, rank=3, shape=(None, None, K), device=x.device)
    v.same_dtype(op, "w", w, x, "x")
    v.tensor(op, "offsets", offsets, dtypes=(torch.int32,), shape=(w.shape[0],), device=x.device)
    return M, w.shape[1]


def check_grouped_gemm_masked(x, w, counts):
    op = "grouped_gemm_masked"
    v.tensor(op, "x", x, rank=3, dtypes=v.FLOAT_DTYPES)
    G, _, K = x.shape
    v.tensor(op, "w", w, rank=3, shape=(G, None, K), device=x.device)
    v.same_dtype(op, "w", w, x, "x")
    v.tensor(op, "counts", counts, dtypes=(torch.int32,), shape=(G,), device=x.device)
    return x.shape[1], w.shape[1]


def group_bounds(offsets: torch.Tensor, rows: int) -> list[tuple[int, int]]:
    """Validated ``(start, end)`` row range of each group from cumulative ``offsets``."""
    ends = offsets.tolist()
    starts = [0, *ends[:-1]]
    for g, (a, b) in enumerate(zip(starts, ends)):
        if b < a or b > rows:
            raise ValueError(
                f"grouped_gemm: 'offsets' must be non-decreasing cumulative row ends <= {rows}, "
                f"got offsets[{g}] = {b} after {a}"
            )
    return list(zip(starts, ends))


def grouped_gemm(x, w, offsets):
    M, N = check_grouped_gemm(x, w, offsets)
    acc = accumulation_dtype(x.dtype)
    y = x.new_zeros(M, N)
    for g, (a, b) in enumerate(group_bounds(offsets, M)):
        if b > a:
            y[a:b] = (x[a:b].to(acc) @ w[g].to(acc).T).to(x.dtype)
    return y


def grouped_gemm_masked(x, w, counts):
    Mmax, N = check_grouped_gemm_masked(x, w, counts)
    v.index_range("grouped_gemm_masked", "counts", counts, Mmax + 1, allow_invalid=False)
    acc = accumulation_dtype(x.dtype)
    y = torch.einsum("gmk,gnk->gmn", x.to(acc), w.to(acc))
    keep = torch.arange(Mmax, device=x.device)[None, :] < counts[:, None]
    return (y * keep[..., None]).to(x.dtype)
