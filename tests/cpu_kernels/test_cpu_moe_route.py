"""C++ moe_route vs the reference: indices bit for bit (the kernel takes its scores from the same ATen ops
as the reference; the selection is its own), weights within four ulps (its own normalisation sums in double,
the reference's ATen sum in the scores' dtype)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v4_ascend.reference import moe as ref


def route_both(served_by_cpp, *args):
    with served_by_cpp("moe_route"):
        got = torch.ops.v4_ascend.moe_route(*args)
    return got, ref.moe_route(*args)


def assert_identical(got, want):
    assert got[1].dtype == torch.int32 and torch.equal(got[1], want[1])
    assert got[0].dtype == want[0].dtype
    ulp = torch.finfo(want[0].dtype).eps
    torch.testing.assert_close(got[0], want[0], rtol=4 * ulp, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias_dtype", [None, torch.float32, torch.float64])
@pytest.mark.parametrize(("T", "E", "k"), [(1, 256, 6), (37, 64, 8), (5, 8, 8), (3, 16, 1)])
def test_matches_reference(served_by_cpp, dtype, bias_dtype, T, E, k):
    logits = 3 * torch.randn(T, E, dtype=dtype)
    bias = None if bias_dtype is None else 0.1 * torch.randn(E, dtype=bias_dtype)
    assert_identical(*route_both(served_by_cpp, logits, k, 1.5, bias))


def test_ties_large_logits_and_nan(served_by_cpp):
    """Equal scores pick the lower expert; the linear softplus region; NaN ranks first (as torch.sort)."""
    logits = torch.randn(5, 12)
    logits[:, 6:] = logits[:, :6]
    logits[0] = 25.0
    logits[1, 3] = float("nan")
    logits[2] = torch.tensor([1.0, 2.0] * 6)
    got, want = route_both(served_by_cpp, logits, 5, 1.0)
    assert_identical(got, want)
    assert got[1][0].tolist() == [0, 1, 2, 3, 4] and got[1][1, 0] == 3
    assert got[1][2].tolist() == [1, 3, 5, 7, 9]


def test_hash_routing_ignores_bias(served_by_cpp):
    V, T, E, k = 50, 7, 16, 6
    tid2eid = torch.stack([torch.randperm(E)[:k] for _ in range(V)]).to(torch.int32)
    token_ids = torch.randint(0, V, (T,))
    logits, bias = torch.randn(T, E), torch.randn(E)
    got, want = route_both(served_by_cpp, logits, k, 1.5, bias, token_ids, tid2eid)
    assert_identical(got, want)
    assert torch.equal(got[1], tid2eid[token_ids])


def test_no_tokens_and_non_contiguous_logits(served_by_cpp):
    got, want = route_both(served_by_cpp, torch.randn(0, 8), 2, 1.0)
    assert got[0].shape == got[1].shape == (0, 2)
    logits = torch.randn(16, 9).t()
    assert not logits.is_contiguous()
    assert_identical(*route_both(served_by_cpp, logits, 3, 2.5, torch.randn(16)))


@pytest.mark.parametrize(("kwargs", "arg"), [
    ({"topk": 0}, "topk"),
    ({"topk": 9}, "topk"),
    ({"bias": torch.zeros(7)}, "bias"),
    ({"bias": torch.zeros(8, dtype=torch.float16)}, "bias"),
    ({"token_ids": torch.zeros(4, dtype=torch.int64)}, "tid2eid"),
    ({"token_ids": torch.tensor([0, 1, 2, 9]), "tid2eid": torch.zeros(5, 2, dtype=torch.int32)}, "token_ids"),
    ({"token_ids": torch.tensor([0, 1, 2, 3]), "tid2eid": torch.full((5, 2), 8, dtype=torch.int32)}, "tid2eid"),
    ({"token_ids": torch.tensor([0, 1, 2, 3]), "tid2eid": torch.zeros(5, 3, dtype=torch.int32)}, "tid2eid"),
    ({"logits": torch.zeros(4, 8, dtype=torch.bfloat16)}, "logits"),
])
def test_bad_arguments_name_the_argument(served_by_cpp, kwargs, arg):
    args = {"logits": torch.randn(4, 8), "topk": 2, "route_scale": 1.0, "bias": None, "token_ids": None,
            "tid2eid": None, **kwargs}
    with served_by_cpp("moe_route", calls=0), pytest.raises(ValueError, match=f"moe_route: '{arg}'"):
        torch.ops.v4_ascend.moe_route(*args.values())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(T=st.integers(1, 12), E=st.integers(1, 40), data=st.data(), with_bias=st.booleans(),
       coarse=st.booleans())
def test_property_matches_reference(served_by_cpp, T, E, data, with_bias, coarse):
    k = data.draw(st.integers(1, E))
    logits = torch.randn(T, E)
    if coarse:  # few distinct values: many exact ties
        logits = logits.round()
    bias = torch.randn(E).round() if with_bias else None
    assert_identical(*route_both(served_by_cpp, logits, k, 1.5, bias))
