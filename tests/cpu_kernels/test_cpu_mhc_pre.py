"""C++ mhc_pre vs the reference (per-dtype tolerances: the kernel's dot products and sums run in its own
order, so ``u``, ``post`` and ``comb`` agree to rounding; fp64 is held to 1e-10)."""

from __future__ import annotations

import pytest
import torch

from v4_ascend.reference import mhc as ref
from v4_ascend.testing.tolerance import assert_close


def inputs(T, n, D, dtype=torch.float32, param_dtype=torch.float32):
    mixes = (2 + n) * n
    x = torch.randn(T, n, D, dtype=torch.float64).to(dtype)
    fn = (torch.randn(mixes, n * D, dtype=torch.float64) * (n * D) ** -0.5).to(param_dtype)
    scale = (torch.rand(3, dtype=torch.float64) + 0.1).to(param_dtype)
    base = (0.5 * torch.randn(mixes, dtype=torch.float64)).to(param_dtype)
    return x, fn, scale, base


def pre_mix(served_by_cpp, *args):
    with served_by_cpp("mhc_pre"):
        return torch.ops.v4_ascend.mhc_pre(*args)


def assert_matches(got, want, dtype):
    u, post, comb = got
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert u.dtype == dtype and post.dtype == comb.dtype == acc
    assert_close(u, want[0], dtype, "u")
    assert_close(post, want[1], acc, "post")
    assert_close(comb, want[2], acc, "comb")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("T", "n", "D", "iters"), [
    (2, 4, 4096, 20),  # V4 Flash decode
    (9, 4, 256, 20),  # two groups of 4 tokens and a tail
    (5, 3, 40, 3),  # 15 mixes (a partial tile), n * D = 120 padded to 128
    (3, 1, 16, 1),  # one stream, one Sinkhorn pass
])
def test_matches_reference(served_by_cpp, dtype, T, n, D, iters):
    args = (*inputs(T, n, D, dtype), iters, 1e-6, 1e-6)
    assert_matches(pre_mix(served_by_cpp, *args), ref.mhc_pre(*args), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_vs_fp32_reference_on_same_values(served_by_cpp, dtype):
    x, fn, scale, base = inputs(6, 4, 128, dtype)
    got = pre_mix(served_by_cpp, x, fn, scale, base, 20, 1e-6, 1e-6)
    want = ref.mhc_pre(x.float(), fn, scale, base, 20, 1e-6, 1e-6)
    assert_matches(got, (want[0].to(dtype), want[1], want[2]), dtype)


def test_comb_is_doubly_stochastic_and_post_in_range(served_by_cpp):
    """Independent of the reference: Sinkhorn's columns sum to 1 (it ends on a column pass)."""
    _, post, comb = pre_mix(served_by_cpp, *inputs(7, 4, 64), 20, 1e-6, 1e-6)
    torch.testing.assert_close(comb.sum(dim=-2), torch.ones(7, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(comb.sum(dim=-1), torch.ones(7, 4), atol=1e-3, rtol=0)
    assert ((post > 0) & (post < 2)).all()


def test_low_precision_parameters_non_contiguous_streams_and_no_tokens(served_by_cpp):
    x, fn, scale, base = inputs(6, 4, 32, param_dtype=torch.bfloat16)
    strided = x.transpose(0, 1).contiguous().transpose(0, 1)
    assert not strided.is_contiguous()
    args = (fn, scale, base, 20, 1e-6, 1e-6)
    assert_matches(pre_mix(served_by_cpp, strided, *args), ref.mhc_pre(x, *args), torch.float32)
    u, post, comb = pre_mix(served_by_cpp, x[:0], *args)
    assert u.shape == (0, 32) and post.shape == (0, 4) and comb.shape == (0, 4, 4)


@pytest.mark.parametrize(("change", "arg"), [
    (lambda a: {**a, "fn": a["fn"][:, :-1]}, "fn"),
    (lambda a: {**a, "scale": a["scale"][:2]}, "scale"),
    (lambda a: {**a, "base": a["base"].int()}, "base"),
    (lambda a: {**a, "iters": 0}, "iters"),
    (lambda a: {**a, "norm_eps": 0.0}, "norm_eps"),
    (lambda a: {**a, "hc_eps": -1.0}, "hc_eps"),
    (lambda a: {**a, "x": a["x"][:, :0]}, "x"),
])
def test_bad_arguments_name_the_argument(served_by_cpp, change, arg):
    x, fn, scale, base = inputs(2, 4, 16)
    good = {"x": x, "fn": fn, "scale": scale, "base": base, "iters": 20, "norm_eps": 1e-6, "hc_eps": 1e-6}
    with served_by_cpp("mhc_pre", calls=0), pytest.raises(ValueError, match=f"mhc_pre: '{arg}'"):
        torch.ops.v4_ascend.mhc_pre(*change(good).values())
