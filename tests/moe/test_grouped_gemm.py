"""grouped_gemm / grouped_gemm_masked against a per-group fp64 NumPy loop, and each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from v4_ascend import ops
from v4_ascend.testing.tolerance import assert_close


def offsets_of(counts):
    return torch.tensor(np.cumsum(counts), dtype=torch.int32)


def per_group_loop(x, w, counts):
    """y[a:b] = x[a:b] @ w[g].T in fp64, group by group; rows past the last group stay 0."""
    xn, wn = x.double().numpy(), w.double().numpy()
    y = np.zeros((x.shape[0], w.shape[1]))
    start = 0
    for g, count in enumerate(counts):
        for r in range(start, start + count):
            y[r] = wn[g] @ xn[r]
        start += count
    return torch.from_numpy(y)


SHAPES = [
    ("empty-and-one-row-groups", [0, 1, 0, 0, 3, 1, 0], 24, 16, 0),
    ("unaligned", [17, 5, 33, 1], 72, 40, 0),
    ("all-empty", [0, 0, 0], 8, 8, 2),
    ("trailing-rows", [2, 3], 16, 12, 4),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name,counts,K,N,pad", SHAPES)
def test_grouped_gemm_matches_per_group_loop(dtype, name, counts, K, N, pad):
    M = sum(counts) + pad
    x = torch.randn(M, K).to(dtype)
    w = (torch.randn(len(counts), N, K) * K**-0.5).to(dtype)
    y = ops.grouped_gemm(x, w, offsets_of(counts))
    assert y.dtype == dtype and y.shape == (M, N)
    assert_close(y, per_group_loop(x, w, counts).to(torch.float64 if dtype == torch.float64 else torch.float32),
                 dtype)
    assert y[sum(counts):].eq(0).all()


def to_masked(x, counts, Mmax, fill):
    xm = torch.full((len(counts), Mmax, x.shape[1]), fill, dtype=x.dtype)
    start = 0
    for g, c in enumerate(counts):
        xm[g, :c] = x[start:start + c]
        start += c
    return xm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_matches_contiguous(dtype):
    counts = [3, 0, 1, 4, 2]
    Mmax, K, N = 4, 32, 24
    x = torch.randn(sum(counts), K).to(dtype)
    w = torch.randn(len(counts), N, K).to(dtype)
    contiguous = ops.grouped_gemm(x, w, offsets_of(counts))
    # NaN padding: rows past counts[g] must still come out as exact zeros.
    padded = to_masked(x, counts, Mmax, float("nan"))
    masked = ops.grouped_gemm_masked(padded, w, torch.tensor(counts, dtype=torch.int32))
    assert torch.equal(masked, to_masked(contiguous, counts, Mmax, 0.0))


def test_gradcheck_grouped_gemms():
    counts = [2, 0, 1, 3]
    x = torch.randn(sum(counts) + 1, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(len(counts), 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.grouped_gemm(a, b, offsets_of(counts)), (x, w))
    xm = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    cnt = torch.tensor([3, 0, 1, 2], dtype=torch.int32)
    assert torch.autograd.gradcheck(lambda a, b: ops.grouped_gemm_masked(a, b, cnt), (xm, w))


def test_bad_inputs_name_the_argument():
    x, w = torch.randn(6, 8), torch.randn(3, 4, 8)
    with pytest.raises(ValueError, match="'offsets'"):
        ops.grouped_gemm(x, w, torch.tensor([2, 1, 6], dtype=torch.int32))  # decreasing
    with pytest.raises(ValueError, match="'offsets'"):
        ops.grouped_gemm(x, w, torch.tensor([2, 4, 7], dtype=torch.int32))  # past the rows
    with pytest.raises(ValueError, match="'offsets'"):
        ops.grouped_gemm(x, w, torch.tensor([2, 4, 6]))  # int64
    with pytest.raises(ValueError, match="'w'"):
        ops.grouped_gemm(x, torch.randn(3, 4, 7), torch.tensor([2, 4, 6], dtype=torch.int32))
    with pytest.raises(ValueError, match="'w'"):
        ops.grouped_gemm(x, w.double(), torch.tensor([2, 4, 6], dtype=torch.int32))
    with pytest.raises(ValueError, match="'counts'"):
        ops.grouped_gemm_masked(torch.randn(3, 2, 8), w, torch.tensor([1, 3, 0], dtype=torch.int32))
