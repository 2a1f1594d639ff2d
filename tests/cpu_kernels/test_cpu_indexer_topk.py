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


def selection_within_error(idx, q, k, weights, q_pos, topk, k_offset=None):
    """Whether every query's rows are a correct top-k up to the fp32 accumulation error: with fp64 scores s of
    the same inputs and a bound e on each fp32 score's error, every selected row beats every unselected
    visible one (s_i + e_i >= s_j - e_j), and the list runs in descending order (s_a + e_a >= s_b - e_b for
    a listed before b). Rows whose scores are further apart than their error bounds must therefore be
    selected and ordered exactly as in exact arithmetic."""
    q64, k64, w64 = q.double(), k.double(), weights.double()
    H, d = q.shape[1:]
    unit = 2.0 ** -24
    for t in range(q.shape[0]):
        base = 0 if k_offset is None else int(k_offset[t])
        visible = (int(q_pos[t]) + 1) // RATIO
        keys = k64[base:base + visible]
        scores = (torch.relu(q64[t] @ keys.T) * w64[t, :, None]).sum(0)
        bound = (d + H + 2) * unit * (w64[t].abs()[:, None] * (q64[t].abs() @ keys.abs().T)).sum(0)
        rows = idx[t][: min(topk, visible)].long() - base
        if idx[t][rows.numel():].ne(-1).any() or rows.unique().numel() != rows.numel() or (rows < 0).any():
            return False
        chosen = torch.zeros(visible, dtype=torch.bool)
        chosen[rows] = True
        if chosen.all() or (~chosen).all():
            low_chosen, high_other = 0.0, -1.0
        else:
            low_chosen = float((scores + bound)[chosen].min())
            high_other = float((scores - bound)[~chosen].max())
        in_order = (scores[rows[:-1]] + bound[rows[:-1]] >= scores[rows[1:]] - bound[rows[1:]]).all()
        if low_chosen < high_other or not in_order:
            return False
    return True


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("T", "H", "d", "N", "topk", "batched"), [
    (24, 64, 128, 300, 32, False),  # V4-Flash heads and width
    (17, 6, 17, 90, 20, True),  # odd width (a zero channel pads the bf16 pairs), heads not a multiple of 8
])
def test_normal_inputs_select_within_accumulation_error(served_by_cpp, dtype, T, H, d, N, topk, batched):
    """Production-like inputs, where the kernel's sum order differs from the reference's: the selection is
    exact wherever scores are separated by more than the fp32 error. The checker rejects a wrong selection."""
    q, k = torch.randn(T, H, d).to(dtype), torch.randn(N, d).to(dtype)
    weights = torch.randn(T, H) * (H * d) ** -0.5
    if batched:
        k_offset = torch.randint(0, N // 2, (T,), dtype=torch.int32)
        q_pos = torch.randint(0, (N // 2) * RATIO, (T,), dtype=torch.int32)
    else:
        k_offset, q_pos = None, torch.randint(0, N * RATIO, (T,), dtype=torch.int32)
    q_pos[0] = (N // 2 if batched else N) * RATIO - 1  # query 0 sees more rows than topk
    got, want = run_both(served_by_cpp, q, k, weights, q_pos, topk, k_offset, reference_dtype=torch.float32)
    assert selection_within_error(got, q, k, weights, q_pos, topk, k_offset)
    assert selection_within_error(want, q, k, weights, q_pos, topk, k_offset)
    assert (got == want).float().mean() > 0.95  # near-ties within the error are rare
    base, visible = (0 if k_offset is None else int(k_offset[0])), (int(q_pos[0]) + 1) // RATIO
    scores = (torch.relu(q[0].double() @ k[base:base + visible].double().T) * weights[0].double()[:, None]).sum(0)
    worst = next(base + int(i) for i in scores.argsort() if base + int(i) not in got[0].tolist())
    wrong = got.clone()
    wrong[0, topk - 1] = worst  # the lowest-scoring row instead of the k-th: no longer a top-k
    assert not selection_within_error(wrong, q, k, weights, q_pos, topk, k_offset)
