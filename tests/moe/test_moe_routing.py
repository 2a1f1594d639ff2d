"""moe_route, moe_dispatch / moe_combine and moe_swiglu against per-token Python loops (§6.2, §6.3)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from v4_ascend import ops


def loop_route(logits, topk, route_scale, bias=None, token_ids=None, tid2eid=None):
    """One token at a time in Python floats: sqrt(softplus) with the linear branch above 20, selection
    by sorting (score + bias, then lower expert index), weights from the unbiased scores."""
    weights, picks = [], []
    for t, row in enumerate(logits.double().tolist()):
        s = [math.sqrt(v if v > 20 else math.log1p(math.exp(v))) for v in row]
        if tid2eid is not None:
            chosen = tid2eid[int(token_ids[t])].tolist()
        else:
            b = [0.0] * len(s) if bias is None else bias.double().tolist()
            chosen = sorted(range(len(s)), key=lambda e: (-(s[e] + b[e]), e))[:topk]
        total = sum(s[e] for e in chosen)
        weights.append([s[e] / total * route_scale for e in chosen])
        picks.append(chosen)
    return torch.tensor(weights, dtype=torch.float64), torch.tensor(picks, dtype=torch.int32)


def hash_table(V, E, k, gen=None):
    return torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(V)]).to(torch.int32)


@pytest.mark.parametrize("T,E,k,with_bias", [(16, 256, 6, True), (9, 16, 4, False), (5, 8, 1, True), (3, 6, 6, True)])
def test_route_matches_loop_fp64(T, E, k, with_bias):
    logits = torch.randn(T, E, dtype=torch.float64) * 4
    logits[0, :3] = torch.tensor([21.0, 30.0, -30.0])  # softplus linear branch and a tiny score
    bias = torch.randn(E, dtype=torch.float64) * 0.3 if with_bias else None
    weights, idx = ops.moe_route(logits, k, 1.5, bias)
    want_w, want_idx = loop_route(logits, k, 1.5, bias)
    assert idx.dtype == torch.int32 and torch.equal(idx, want_idx)
    torch.testing.assert_close(weights, want_w, atol=1e-13, rtol=1e-13)


def test_route_ties_go_to_the_lower_expert():
    # Logits from a coarse grid: many exact ties, far-apart distinct values.
    logits = torch.randint(-4, 5, (32, 12)).float() * 0.5
    logits[0] = 25.0  # all tied in the linear softplus branch
    weights, idx = ops.moe_route(logits, 5, 1.0)
    want_w, want_idx = loop_route(logits, 5, 1.0)
    assert torch.equal(idx, want_idx)
    assert idx[0].tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(weights.double(), want_w, atol=1e-6, rtol=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 8), scale=st.sampled_from([1.0, 1.5, 2.5]))
def test_route_fp32_selects_top_k_and_weights_sum_to_route_scale(seed, k, scale):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(10, 32, generator=gen) * 3
    bias = torch.randn(32, generator=gen)
    weights, idx = ops.moe_route(logits, k, scale, bias)
    select = torch.nn.functional.softplus(logits).sqrt() + bias
    chosen = select.gather(1, idx.long())
    others = select.scatter(1, idx.long(), float("-inf"))
    assert (chosen.min(dim=1).values >= others.max(dim=1).values).all()
    assert (chosen[:, 1:] <= chosen[:, :-1]).all()  # ordered by decreasing selection score
    assert (idx.sort(dim=1).values.diff(dim=1) > 0).all()  # distinct experts
    torch.testing.assert_close(weights.sum(dim=1), torch.full((10,), scale), atol=2e-6, rtol=0)


def test_hash_routing_uses_the_table_and_ignores_the_bias():
    T, E, k, V = 12, 16, 6, 40
    logits = torch.randn(T, E, dtype=torch.float64)
    tid2eid, token_ids = hash_table(V, E, k), torch.randint(0, V, (T,))
    weights, idx = ops.moe_route(logits, k, 2.5, None, token_ids, tid2eid)
    assert torch.equal(idx, tid2eid[token_ids])
    want_w, _ = loop_route(logits, k, 2.5, None, token_ids, tid2eid)
    torch.testing.assert_close(weights, want_w, atol=1e-13, rtol=1e-13)
    biased = ops.moe_route(logits, k, 2.5, torch.randn(E, dtype=torch.float64) * 10, token_ids, tid2eid)
    assert torch.equal(biased[0], weights) and torch.equal(biased[1], idx)
    torch.testing.assert_close(weights.sum(1), torch.full((T,), 2.5, dtype=torch.float64), atol=1e-13, rtol=0)


def test_route_weights_gradcheck():
    logits = torch.randn(6, 10, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(10, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda lg: ops.moe_route(lg, 3, 1.5, bias)[0], (logits,))
    tid2eid, ids = hash_table(20, 10, 3), torch.randint(0, 20, (6,))
    assert torch.autograd.gradcheck(lambda lg: ops.moe_route(lg, 3, 1.5, None, ids, tid2eid)[0], (logits,))


def test_route_bad_inputs_name_the_argument():
    logits = torch.randn(4, 8)
    zeros = torch.zeros(4, dtype=torch.int64)
    cases = [
        ("'topk'", (logits, 9, 1.0)),
        ("'topk'", (logits, 0, 1.0)),
        ("'logits'", (logits.bfloat16(), 2, 1.0)),
        ("'bias'", (logits, 2, 1.0, torch.randn(7))),
        ("'tid2eid'", (logits, 2, 1.0, None, zeros, None)),
        ("'tid2eid'", (logits, 2, 1.0, None, zeros, torch.full((5, 2), 8, dtype=torch.int32))),
        ("'token_ids'", (logits, 2, 1.0, None, torch.full((4,), 5), torch.zeros(5, 2, dtype=torch.int32))),
        ("'tid2eid'", (logits, 2, 1.0, None, zeros, torch.zeros(5, 3, dtype=torch.int32))),
    ]
    for arg, args in cases:
        with pytest.raises(ValueError, match=arg):
            ops.moe_route(*args)


# ---- dispatch / combine ---------------------------------------------------------------------------

def loop_dispatch(x, idx, E):
    """Rows expert by expert, each expert's rows in (token, slot) order; dropped slots at the end."""
    rows, slots, counts = [], [], []
    T, k = idx.shape
    for e in range(E):
        mine = [(t, j) for t in range(T) for j in range(k) if idx[t, j] == e]
        counts.append(len(mine))
        rows += [x[t] for t, _ in mine]
        slots += [t * k + j for t, j in mine]
    dropped = int((idx < 0).sum())
    rows += [torch.zeros_like(x[0])] * dropped
    slots += [-1] * dropped
    return torch.stack(rows), torch.tensor(counts).cumsum(0).to(torch.int32), torch.tensor(slots, dtype=torch.int32)


@pytest.mark.parametrize("T,E,k,drop", [(16, 64, 6, False), (7, 4, 2, True), (1, 8, 3, False)])
def test_dispatch_and_combine_match_loops(T, E, k, drop):
    x = torch.randn(T, 20)
    idx = torch.rand(T, E).argsort(dim=1)[:, :k].to(torch.int32)
    if drop:
        idx[::2, 0] = -1
    rows, offsets, slots = ops.moe_dispatch(x, idx, E)
    want_rows, want_offsets, want_slots = loop_dispatch(x, idx, E)
    assert torch.equal(rows, want_rows) and torch.equal(offsets, want_offsets) and torch.equal(slots, want_slots)
    weights = torch.rand(T, k)
    y = torch.randn(rows.shape[0], 12)
    out = ops.moe_combine(y, slots, weights)
    want = torch.zeros(T, 12, dtype=torch.float64)
    for r, s in enumerate(slots.tolist()):
        if s >= 0:
            want[s // k] += weights[s // k, s % k].double() * y[r].double()
    torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=1e-5)
    # round trip: dispatch then an unweighted combine counts each token once per valid slot
    back = ops.moe_combine(rows, slots, torch.ones(T, k))
    torch.testing.assert_close(back, x * (idx >= 0).sum(1, keepdim=True))


def test_dispatch_combine_gradcheck_and_errors():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([[0, 2], [1, -1], [2, 0], [0, 1], [2, 2]], dtype=torch.int32)
    assert torch.autograd.gradcheck(lambda a: ops.moe_dispatch(a, idx, 3)[0], (x,))
    _, _, slots = ops.moe_dispatch(x.detach(), idx, 3)
    y = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.moe_combine(a, slots, b), (y, w))
    poisoned = y.detach().clone()
    poisoned[slots < 0] = float("nan")  # rows of dropped slots never reach the output
    assert torch.isfinite(ops.moe_combine(poisoned, slots, w.detach())).all()
    with pytest.raises(ValueError, match="'idx'"):
        ops.moe_dispatch(x.detach(), idx.clamp(max=2) + 1, 3)
    with pytest.raises(ValueError, match="'idx'"):
        ops.moe_dispatch(x.detach(), idx.long(), 3)
    with pytest.raises(ValueError, match="'slots'"):
        ops.moe_combine(y.detach(), slots + 1, w.detach())
    with pytest.raises(ValueError, match="'num_experts'"):
        ops.moe_dispatch(x.detach(), idx, 0)


# ---- clamped SwiGLU -------------------------------------------------------------------------------

def test_swiglu_clamps_asymmetrically_and_weights_h():
    gate = torch.tensor([[12.0, -12.0, 3.0, 50.0]], dtype=torch.float64)
    up = torch.tensor([[15.0, -15.0, -2.0, 4.0]], dtype=torch.float64)
    weight = torch.tensor([0.5], dtype=torch.float64)

    def silu(v):
        return v / (1 + math.exp(-v))

    # gate only from above (-12 stays), up on both sides
    want = [silu(10.0) * 10.0, silu(-12.0) * -10.0, silu(3.0) * -2.0, silu(10.0) * 4.0]
    h = ops.moe_swiglu(gate, up, 10.0, weight)
    torch.testing.assert_close(h[0], 0.5 * torch.tensor(want, dtype=torch.float64), atol=1e-14, rtol=1e-14)
    unclamped = [silu(g) * u for g, u in zip(gate[0].tolist(), up[0].tolist())]
    torch.testing.assert_close(ops.moe_swiglu(gate, up, 0.0)[0], torch.tensor(unclamped, dtype=torch.float64))


def test_swiglu_bf16_rounds_once_and_gradcheck():
    gate, up = torch.randn(8, 16) * 8, torch.randn(8, 16) * 8
    weight = torch.rand(8)
    h = ops.moe_swiglu(gate.bfloat16(), up.bfloat16(), 10.0, weight)
    assert h.dtype == torch.bfloat16
    assert torch.equal(h, ops.moe_swiglu(gate.bfloat16().float(), up.bfloat16().float(), 10.0, weight).bfloat16())
    g = torch.randn(4, 6, dtype=torch.float64) * 8
    g = g.where((g - 10).abs() > 1e-3, 5.0).requires_grad_(True)  # keep away from the clamp kink
    u = (torch.randn(4, 6, dtype=torch.float64) * 8).requires_grad_(True)
    u.data = u.data.where((u.data.abs() - 10).abs() > 1e-3, 1.0)
    w = torch.rand(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: ops.moe_swiglu(a, b, 10.0, c), (g, u, w))
    with pytest.raises(ValueError, match="'up'"):
        ops.moe_swiglu(g.detach(), u.detach()[:, :3])
    with pytest.raises(ValueError, match="'weight'"):
        ops.moe_swiglu(g.detach(), u.detach(), 10.0, torch.rand(3, dtype=torch.float64))
