"""mHC ops against per-token fp64 formulations written here (v4_math.md §4.3), plus the Sinkhorn and
transposition properties the spec names as oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from v4_ascend import ops
from v4_ascend.testing.tolerance import assert_close


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _sinkhorn_oracle(logits: np.ndarray, iters: int, eps: float) -> np.ndarray:
    """One n x n matrix, explicit loops in fp64."""
    n = logits.shape[0]
    m = np.empty((n, n))
    for i in range(n):
        row = np.exp(logits[i] - logits[i].max())
        m[i] = row / row.sum() + eps

    def column_pass():
        for j in range(n):
            m[:, j] /= m[:, j].sum() + eps

    column_pass()
    for _ in range(iters - 1):
        for i in range(n):
            m[i] /= m[i].sum() + eps
        column_pass()
    return m


def _pre_oracle(x, fn, scale, base, iters, norm_eps, hc_eps):
    """Token by token: u [T, D], post [T, n], comb [T, n, n] in fp64."""
    x, fn, scale, base = (t.double().numpy() for t in (x, fn, scale, base))
    T, n, D = x.shape
    us, posts, combs = np.zeros((T, D)), np.zeros((T, n)), np.zeros((T, n, n))
    for t in range(T):
        v = x[t].reshape(-1)
        m = fn @ v / math.sqrt(np.mean(v * v) + norm_eps)
        pre = [_sigmoid(scale[0] * m[i] + base[i]) + hc_eps for i in range(n)]
        posts[t] = [2.0 * _sigmoid(scale[1] * m[n + i] + base[n + i]) for i in range(n)]
        lam = np.array([[scale[2] * m[2 * n + n * i + j] + base[2 * n + n * i + j] for j in range(n)]
                        for i in range(n)])
        combs[t] = _sinkhorn_oracle(lam, iters, hc_eps)
        us[t] = sum(pre[i] * x[t, i] for i in range(n))
    return torch.from_numpy(us), torch.from_numpy(posts), torch.from_numpy(combs)


def _pre_inputs(T, n, D, dtype, scale_logits=1.0):
    x = torch.randn(T, n, D).to(dtype)
    fn = torch.randn((2 + n) * n, n * D) * (n * D) ** -0.5 * scale_logits
    scale = torch.rand(3) + 0.5
    base = torch.randn((2 + n) * n) * 0.5
    return x, fn, scale, base


@pytest.mark.parametrize("logit_scale", [1.0, 8.0, 40.0])
def test_sinkhorn_columns_sum_to_one(logit_scale):
    logits = torch.randn(64, 4, 4) * logit_scale
    comb = ops.mhc_sinkhorn(logits, 20, 1e-6)
    assert comb.dtype == torch.float32
    torch.testing.assert_close(comb.sum(dim=-2), torch.ones(64, 4), atol=1e-5, rtol=0)
    if logit_scale == 1.0:
        # Rows are only approximately normalised (the loop ends on a column pass; with very peaked
        # logits 20 iterations do not converge the rows at all).
        torch.testing.assert_close(comb.sum(dim=-1), torch.ones(64, 4), atol=1e-4, rtol=0)
    assert (comb > 0).all()


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 6), iters=st.integers(1, 25), seed=st.integers(0, 2**31 - 1))
def test_sinkhorn_matches_loop_oracle(n, iters, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, n, n, generator=gen, dtype=torch.float64) * 3
    comb = ops.mhc_sinkhorn(logits, iters, 1e-6)
    expected = torch.from_numpy(np.stack([_sinkhorn_oracle(m, iters, 1e-6) for m in logits.numpy()]))
    assert_close(comb, expected, torch.float64, "comb")


def test_sinkhorn_single_iteration_is_softmax_then_one_column_pass():
    logits = torch.randn(5, 4, 4, dtype=torch.float64)
    m = torch.softmax(logits, -1) + 1e-6
    assert_close(ops.mhc_sinkhorn(logits, 1, 1e-6), m / (m.sum(-2, keepdim=True) + 1e-6), torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T,n,D", [(6, 4, 128), (1, 4, 4096), (4, 3, 24)])
def test_mhc_pre_matches_per_token_formulation(dtype, T, n, D):
    x, fn, scale, base = _pre_inputs(T, n, D, dtype)
    u, post, comb = ops.mhc_pre(x, fn, scale, base, 20, 1e-6, 1e-6)
    assert (u.dtype, post.dtype, comb.dtype) == (dtype, torch.float32, torch.float32)
    u_ref, post_ref, comb_ref = _pre_oracle(x, fn, scale, base, 20, 1e-6, 1e-6)
    assert_close(post, post_ref, torch.float32, "post")
    assert_close(comb, comb_ref, torch.float32, "comb")
    assert_close(u, u_ref, dtype, "u")


def test_mhc_pre_defaults_are_v4_values():
    x, fn, scale, base = _pre_inputs(3, 4, 32, torch.float32)
    for a, b in zip(ops.mhc_pre(x, fn, scale, base), ops.mhc_pre(x, fn, scale, base, 20, 1e-6, 1e-6)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    # And a different iteration count really changes comb (the argument is not ignored).
    assert not torch.equal(ops.mhc_pre(x, fn, scale, base, 2)[2], ops.mhc_pre(x, fn, scale, base)[2])


def test_mhc_post_takes_columns_of_comb():
    """Swap test: comb is a 3-cycle permutation, so its transpose routes streams the other way."""
    T, n, D = 2, 4, 8
    x = torch.randn(T, n, D)
    f = torch.randn(T, D)
    perm = [1, 2, 0, 3]  # stream i goes to output perm[i]: comb[i, perm[i]] = 1 (not symmetric)
    comb = torch.zeros(T, n, n)
    for i, j in enumerate(perm):
        comb[:, i, j] = 1.0
    out = ops.mhc_post(f, x, torch.zeros(T, n), comb)
    for i, j in enumerate(perm):
        torch.testing.assert_close(out[:, j], x[:, i], atol=0, rtol=0)
    # The post term lands on every stream with its own weight.
    post = torch.tensor([[0.5, 1.0, 1.5, 2.0]]).expand(T, n)
    out = ops.mhc_post(f, x, post, comb)
    for i, j in enumerate(perm):
        torch.testing.assert_close(out[:, j], x[:, i] + post[:, j, None] * f, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_mhc_post_matches_per_token_formulation(dtype):
    T, n, D = 5, 4, 64
    f, x = torch.randn(T, D).to(dtype), torch.randn(T, n, D).to(dtype)
    post, comb = torch.rand(T, n) * 2, torch.rand(T, n, n)
    out = ops.mhc_post(f, x, post, comb)
    assert out.dtype == dtype
    expected = torch.zeros(T, n, D, dtype=torch.float64)
    for t in range(T):
        for j in range(n):
            expected[t, j] = post[t, j].double() * f[t].double()
            for i in range(n):
                expected[t, j] += comb[t, i, j].double() * x[t, i].double()
    assert_close(out, expected, dtype, "mhc_post")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mhc_head_matches_per_token_formulation(dtype):
    T, n, D = 4, 4, 256
    x = torch.randn(T, n, D).to(dtype)
    fn, scale, base = torch.randn(n, n * D) * (n * D) ** -0.5, torch.rand(1) + 0.5, torch.randn(n)
    y = ops.mhc_head(x, fn, scale, base, 1e-6, 1e-6)
    assert y.dtype == dtype
    xd, fnd = x.double(), fn.double()
    expected = torch.zeros(T, D, dtype=torch.float64)
    for t in range(T):
        v = xd[t].reshape(-1)
        m = fnd @ v / torch.sqrt((v * v).mean() + 1e-6)
        for i in range(n):
            expected[t] += (_sigmoid(float(scale[0] * m[i] + base[i])) + 1e-6) * xd[t, i]
    assert_close(y, expected, dtype, "mhc_head")


def test_mhc_pre_then_post_keeps_scale_bounded():
    """Doubly stochastic mixing: many residual-only steps do not blow the streams up."""
    x, fn, scale, base = _pre_inputs(8, 4, 64, torch.float32, scale_logits=5.0)
    start = x.abs().max()
    for _ in range(50):
        _, _, comb = ops.mhc_pre(x, fn, scale, base)
        x = ops.mhc_post(torch.zeros(8, 64), x, torch.zeros(8, 4), comb)
    assert x.abs().max() <= start * (1 + 1e-3)


def test_gradcheck_fp64():
    T, n, D = 3, 4, 5
    x, fn, scale, base = (t.double().requires_grad_() for t in _pre_inputs(T, n, D, torch.float64))
    assert torch.autograd.gradcheck(lambda *a: ops.mhc_pre(*a, 20, 1e-6, 1e-6), (x, fn, scale, base))
    f = torch.randn(T, D, dtype=torch.float64, requires_grad=True)
    post = torch.rand(T, n, dtype=torch.float64, requires_grad=True)
    comb = torch.rand(T, n, n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.mhc_post, (f, x, post, comb))
    head_fn = torch.randn(n, n * D, dtype=torch.float64, requires_grad=True)
    head_scale = torch.rand(1, dtype=torch.float64, requires_grad=True)
    head_base = torch.randn(n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.mhc_head, (x, head_fn, head_scale, head_base))
    logits = torch.randn(2, n, n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ops.mhc_sinkhorn(a, 5, 1e-6), (logits,))


def test_bf16_gradients_flow_to_every_input():
    x, fn, scale, base = _pre_inputs(2, 4, 16, torch.bfloat16)
    params = [t.requires_grad_() for t in (x, fn, scale, base)]
    u, post, comb = ops.mhc_pre(*params)
    (u.float().sum() + post.sum() + (comb * torch.randn(2, 4, 4)).sum()).backward()
    for p in params:
        assert p.grad is not None and p.grad.dtype == p.dtype and p.grad.abs().sum() > 0


def _bad(name):
    x, fn, scale, base = _pre_inputs(2, 4, 8, torch.float32)
    f, post, comb = torch.randn(2, 8), torch.rand(2, 4), torch.rand(2, 4, 4)
    return {
        "pre-x-rank": (lambda: ops.mhc_pre(x[0], fn, scale, base), "'x'"),
        "pre-x-empty-d": (lambda: ops.mhc_pre(x[..., :0], fn[:, :0], scale, base), "'x'"),
        "pre-fn-shape": (lambda: ops.mhc_pre(x, fn[:-1], scale, base), "'fn'"),
        "pre-scale-shape": (lambda: ops.mhc_pre(x, fn, scale[:1], base), "'scale'"),
        "pre-base-shape": (lambda: ops.mhc_pre(x, fn, scale, base[:4]), "'base'"),
        "pre-iters": (lambda: ops.mhc_pre(x, fn, scale, base, 0), "'iters'"),
        "pre-hc-eps": (lambda: ops.mhc_pre(x, fn, scale, base, 20, 1e-6, 0.0), "'hc_eps'"),
        "post-f-dtype": (lambda: ops.mhc_post(f.double(), x, post, comb), "'f'"),
        "post-comb-shape": (lambda: ops.mhc_post(f, x, post, comb[:, :3]), "'comb'"),
        "post-post-shape": (lambda: ops.mhc_post(f, x, post[:1], comb), "'post'"),
        "head-fn-shape": (lambda: ops.mhc_head(x, fn, scale[:1], base[:4]), "'fn'"),
        "sinkhorn-square": (lambda: ops.mhc_sinkhorn(torch.randn(2, 3, 4)), "'logits'"),
        "sinkhorn-int": (lambda: ops.mhc_sinkhorn(torch.ones(2, 3, 3, dtype=torch.int32)), "'logits'"),
    }[name]


@pytest.mark.parametrize("name", [
    "pre-x-rank", "pre-x-empty-d", "pre-fn-shape", "pre-scale-shape", "pre-base-shape", "pre-iters", "pre-hc-eps",
    "post-f-dtype", "post-comb-shape", "post-post-shape", "head-fn-shape", "sinkhorn-square", "sinkhorn-int",
])
def test_bad_input_names_the_argument(name):
    call, arg = _bad(name)
    with pytest.raises((ValueError, RuntimeError), match=arg):
        call()

