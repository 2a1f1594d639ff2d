"""C++ grouped_gemm / grouped_gemm_masked vs the reference and a per-group fp64 loop. Groups of up to 256 (fp32)
or 8 (other dtypes) rows take the small-M kernel and larger ones ATen mm (csrc/cpu/grouped_gemm.cpp,
small_rows), so the tests cover row counts on both sides of those bounds, K tails that are no multiple of
the vector width (16 fp32 / 32 bf16 columns), and N with leftover weight rows and work blocks (64 rows
per block). Non-contiguous x / w are accepted (made contiguous)."""

from __future__ import annotations

import pytest
import torch

from v4_ascend.reference import moe as ref
from v4_ascend.testing.tolerance import assert_close, reference_dtype

SMALL_ROWS = {torch.float32: 256}  # small_rows() of the C++ kernel; 8 for the other dtypes


def small_rows(dtype):
    return SMALL_ROWS.get(dtype, 8)
DTYPES = [torch.float32, torch.bfloat16, torch.float64, torch.float16]


def per_group_fp64(x_rows, w, groups):
    """y[r] = w[g] @ x[r] in fp64 for each (group, first row, rows); other rows 0."""
    y = torch.zeros(x_rows.shape[0], w.shape[1], dtype=torch.float64)
    for g, start, rows in groups:
        for r in range(start, start + rows):
            y[r] = w[g].double() @ x_rows[r].double()
    return y


def weights(G, N, K, dtype):
    return (torch.randn(G, N, K, dtype=torch.float64) * K**-0.5).to(dtype)


def check(got, want_fp32_ref, want_fp64, dtype):
    assert_close(got, want_fp32_ref, dtype)
    assert_close(got, want_fp64.to(reference_dtype(dtype)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_every_row_count_both_paths(served_by_cpp, dtype):
    most = small_rows(dtype)
    counts = list(range(10)) + [0, most, most + 1]  # 0..9 rows, an empty group, both sides of the bound
    G, Mmax, K, N = len(counts), most + 1, 70, 67
    x = torch.randn(G, Mmax, K, dtype=torch.float64).to(dtype)
    w = weights(G, N, K, dtype)
    cnt = torch.tensor(counts, dtype=torch.int32)
    with served_by_cpp("grouped_gemm_masked"):
        got = torch.ops.v4_ascend.grouped_gemm_masked(x, w, cnt)
    assert got.dtype == dtype and got.shape == (G, Mmax, N)
    acc = reference_dtype(dtype)
    want = ref.grouped_gemm_masked(x.to(acc), w.to(acc), cnt)
    loop = per_group_fp64(x.reshape(G * Mmax, K), w, [(g, g * Mmax, c) for g, c in enumerate(counts)])
    check(got, want, loop.view(G, Mmax, N), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_rows_are_exact_zeros_even_over_nan_padding(served_by_cpp, dtype):
    counts = [4, 0, 1, 3, 257]
    G, Mmax, K, N = len(counts), 257, 33, 9
    x = torch.randn(G, Mmax, K).to(dtype)
    for g, c in enumerate(counts):
        x[g, c:] = float("nan")
    w = weights(G, N, K, dtype)
    w[1] = float("nan")  # an empty group's weights are never read
    with served_by_cpp("grouped_gemm_masked"):
        got = torch.ops.v4_ascend.grouped_gemm_masked(x, w, torch.tensor(counts, dtype=torch.int32))
    for g, c in enumerate(counts):
        assert got[g, c:].eq(0).all()
        assert got[g, :c].isfinite().all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_contiguous_groups_both_paths(served_by_cpp, dtype):
    most = small_rows(dtype)
    counts = [0, 1, 2, 3, 4, 5, 7, 8, 9, most, most + 1, 0, 70, 6]
    K, N, trailing = 37, 131, 3
    M = sum(counts) + trailing
    x = torch.randn(M, K, dtype=torch.float64).to(dtype)
    w = weights(len(counts), N, K, dtype)
    offsets = torch.tensor(counts, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    with served_by_cpp("grouped_gemm"):
        got = torch.ops.v4_ascend.grouped_gemm(x, w, offsets)
    assert got.dtype == dtype and got.shape == (M, N)
    acc = reference_dtype(dtype)
    starts = [0, *offsets.tolist()[:-1]]
    loop = per_group_fp64(x, w, [(g, s, c) for g, (s, c) in enumerate(zip(starts, counts))])
    check(got, ref.grouped_gemm(x.to(acc), w.to(acc), offsets), loop, dtype)
    assert got[-trailing:].eq(0).all()


def test_non_contiguous_inputs_are_made_contiguous(served_by_cpp):
    G, Mmax, K, N = 3, 5, 48, 20
    x = torch.randn(Mmax, G, K).transpose(0, 1)  # [G, Mmax, K] with permuted strides
    w = torch.randn(G, K, N).transpose(1, 2)  # [G, N, K], K not the fastest dim
    cnt = torch.tensor([5, 2, 0], dtype=torch.int32)
    assert not x.is_contiguous() and not w.is_contiguous()
    with served_by_cpp("grouped_gemm_masked"):
        got = torch.ops.v4_ascend.grouped_gemm_masked(x, w, cnt)
    assert_close(got, ref.grouped_gemm_masked(x.contiguous(), w.contiguous(), cnt), torch.float32)
    rows = torch.randn(K, 9).t()  # [9, K] transposed view
    offsets = torch.tensor([4, 4, 9], dtype=torch.int32)
    with served_by_cpp("grouped_gemm"):
        got = torch.ops.v4_ascend.grouped_gemm(rows, w, offsets)
    assert_close(got, ref.grouped_gemm(rows.contiguous(), w.contiguous(), offsets), torch.float32)


def test_no_rows_and_no_groups(served_by_cpp):
    w = torch.randn(2, 6, 8)
    with served_by_cpp("grouped_gemm_masked"):
        got = torch.ops.v4_ascend.grouped_gemm_masked(torch.randn(2, 3, 8), w, torch.zeros(2, dtype=torch.int32))
    assert got.eq(0).all() and got.shape == (2, 3, 6)
    with served_by_cpp("grouped_gemm"):
        got = torch.ops.v4_ascend.grouped_gemm(torch.randn(4, 8), torch.randn(0, 6, 8),
                                               torch.zeros(0, dtype=torch.int32))
    assert got.eq(0).all() and got.shape == (4, 6)
