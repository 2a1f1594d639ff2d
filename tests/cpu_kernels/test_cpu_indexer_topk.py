"""C++ indexer_topk vs the reference: indices compared exactly.

The kernel sums heads in a fixed order and the reference in grouped reductions, so in fp32 two
nearly equal scores could round apart differently. Exact comparisons therefore use small integer
inputs (every score is an exactly representable integer, whatever the order; ties are frequent, which
exercises the lower-row tie rule), or fp64 normal inputs (near-ties below 1e-12 do not occur).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v4_ascend.reference import attention as ref

OP = "indexer_topk"
RATIO = 4


def small_ints(*shape, dtype=torch.float32):
    return torch.randint(-3, 4, shape).to(dtype)


def inputs(T, H, d, N, dtype=torch.float32, *, batched=False):
    """Integer-valued q, k, weights and positions whose windows lie inside a pool of N rows."""
    q, k, weights = small_ints(T, H, d, dtype=dtype), small_ints(N, d, dtype=dtype), small_ints(T, H)
    if batched:
        k_offset = torch.randint(0, N + 1, (T,), dtype=torch.int32)
        q_pos = (torch.rand(T) * ((N - k_offset) * RATIO).float()).to(torch.int32)
    else:
        k_offset = None
        q_pos = torch.randint(0, N * RATIO, (T,), dtype=torch.int32)
    return q, k, weights, q_pos, k_offset


def run_both(served_by_cpp, q, k, weights, q_pos, topk, k_offset=None, reference_dtype=None):
    with served_by_cpp(OP):
        got = torch.ops.v4_ascend.indexer_topk(q, k, weights, q_pos, RATIO, topk, k_offset)
    if reference_dtype is not None:
        q, k = q.to(reference_dtype), k.to(reference_dtype)
    want = ref.indexer_topk(q, k, weights, q_pos, RATIO, topk, k_offset)
    return got, want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("T", "H", "d", "N", "topk", "batched"), [
    (1, 4, 16, 50, 8, False),  # decode, one query
    (40, 5, 12, 77, 16, False),  # several chunks, heads not a multiple of the 4-head tile, tail key tile
    (37, 8, 16, 300, 64, True),  # batched pools through k_offset
    (9, 3, 8, 20, 100, True),  # topk wider than every window: -1 padding
])
def test_matches_reference_on_integer_scores(served_by_cpp, dtype, T, H, d, N, topk, batched):
    q, k, weights, q_pos, k_offset = inputs(T, H, d, N, dtype, batched=batched)
    got, want = run_both(served_by_cpp, q, k, weights, q_pos, topk, k_offset)
    assert got.dtype == torch.int32 and torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_matches_fp32_reference_on_same_values(served_by_cpp, dtype):
    q, k, weights, q_pos, k_offset = inputs(24, 4, 16, 120, dtype, batched=True)
    got, want = run_both(served_by_cpp, q, k, weights, q_pos, 32, k_offset, reference_dtype=torch.float32)
    assert torch.equal(got, want)


def test_fp64_normal_inputs(served_by_cpp):
    T, H, d, N = 20, 6, 32, 200
    q, k = torch.randn(T, H, d, dtype=torch.float64), torch.randn(N, d, dtype=torch.float64)
    weights = torch.randn(T, H, dtype=torch.float64)
    q_pos = torch.randint(0, N * RATIO, (T,), dtype=torch.int32)
    got, want = run_both(served_by_cpp, q, k, weights, q_pos, 40)
    assert torch.equal(got, want)


def test_brute_force_oracle_with_ties_and_nan(served_by_cpp):
    """Independent ranking: sort (NaN first, then descending score, then ascending row) in Python."""
    T, H, d, N = 6, 2, 4, 30
    q, k, weights, q_pos, _ = inputs(T, H, d, N)
    k[7, 0] = float("nan")  # NaN scores rank first, as in torch.sort(descending=True)
    got, want = run_both(served_by_cpp, q, k, weights, q_pos, 12)
    assert torch.equal(got, want)
    scores = (torch.relu(torch.einsum("thd,nd->thn", q.double(), k.double())) * weights.double()[..., None]).sum(1)
    for t in range(T):
        visible = (int(q_pos[t]) + 1) // RATIO
        rows = sorted(range(visible), key=lambda i, s=scores[t]: (not s[i].isnan(), -s[i].nan_to_num(0), i))[:12]
        assert got[t].tolist() == rows + [-1] * (12 - len(rows))


def test_windows_ending_at_the_last_row_of_a_large_pool(served_by_cpp):
    """Rows near the pool size, a window ending exactly at N, and empty windows (q_pos < ratio - 1)."""
    N = 100_000
    q, k, weights, _, _ = inputs(4, 2, 8, N)
    q_pos = torch.tensor([RATIO * 40 - 1, 2, RATIO * 70 - 2, 0], dtype=torch.int32)
    k_offset = torch.tensor([N - 40, N - 1, N - 70, N], dtype=torch.int32)
    got, want = run_both(served_by_cpp, q, k, weights, q_pos, 50, k_offset)
    assert torch.equal(got, want)
    assert int(got[0].max()) == N - 1 and (got[1] == -1).all() and (got[3] == -1).all()


def test_non_contiguous_inputs_are_made_contiguous(served_by_cpp):
    T, H, d, N = 10, 4, 8, 60
    q = small_ints(H, T, d).transpose(0, 1)
    k = small_ints(N, 2 * d)[:, ::2]
    weights = small_ints(H, T).t()
    q_pos = torch.randint(0, N * RATIO, (2 * T,), dtype=torch.int32)[::2]
    assert not (q.is_contiguous() or k.is_contiguous() or weights.is_contiguous() or q_pos.is_contiguous())
    got, want = run_both(served_by_cpp, q, k, weights, q_pos, 20)
    assert torch.equal(got, want)


def test_topk_far_wider_than_the_pool(served_by_cpp):
    """Candidate buffers are sized by the pool, not by topk: a wide output is mostly -1 padding."""
    q, k, weights, q_pos, _ = inputs(3, 2, 8, 10)
    got, want = run_both(served_by_cpp, q, k, weights, q_pos, 100_000)
    assert torch.equal(got, want) and (got[:, 10:] == -1).all()


def test_empty_batch(served_by_cpp):
    q, k, weights, q_pos, _ = inputs(0, 4, 8, 10)
    got, want = run_both(served_by_cpp, q, k, weights, q_pos, 5)
    assert got.shape == want.shape == (0, 5)


@pytest.mark.parametrize(("change", "arg"), [
    (lambda a: {**a, "q_pos": a["q_pos"] - 100}, "q_pos"),
    (lambda a: {**a, "k_offset": a["k_offset"] - 100}, "k_offset"),
    (lambda a: {**a, "k_offset": a["k_offset"] + 30}, "k_offset"),
    (lambda a: {**a, "k": a["k"].double()}, "k"),
    (lambda a: {**a, "q_pos": a["q_pos"].long()}, "q_pos"),
    (lambda a: {**a, "weights": a["weights"][:, :2]}, "weights"),
    (lambda a: {**a, "topk": 0}, "topk"),
    (lambda a: {**a, "ratio": 0}, "ratio"),
])
def test_bad_arguments_name_the_argument(served_by_cpp, change, arg):
    q, k, weights, _, _ = inputs(3, 4, 8, 20)
    good = {"q": q, "k": k, "weights": weights, "q_pos": torch.tensor([3, 20, 50], dtype=torch.int32),
            "ratio": RATIO, "topk": 4, "k_offset": torch.tensor([0, 5, 7], dtype=torch.int32)}
    bad = change(good)
    with served_by_cpp(OP, calls=0), pytest.raises(ValueError, match=f"indexer_topk: '{arg}'"):
        torch.ops.v4_ascend.indexer_topk(*bad.values())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(T=st.integers(1, 20), H=st.integers(1, 9), d=st.integers(1, 20), N=st.integers(1, 90),
       topk=st.integers(1, 40), batched=st.booleans())
def test_property_matches_reference(served_by_cpp, T, H, d, N, topk, batched):
    q, k, weights, q_pos, k_offset = inputs(T, H, d, N, batched=batched)
    got, want = run_both(served_by_cpp, q, k, weights, q_pos, topk, k_offset)
    assert torch.equal(got, want)
