"""moe_ffn against a dense per-token, per-expert loop written after V4's Gate / Expert / MoE (§6)."""

from __future__ import annotations

import math

import pytest
import torch

from v4_ascend import ops
from v4_ascend.testing.tolerance import assert_close

T, D, E, INTER, K = 10, 128, 8, 128, 3


def loop_route(logits, topk, route_scale, bias, token_ids, tid2eid):
    """Per token: sqrt(softplus) scores, selection by sorting (score + bias, lower index), weights."""
    scores = torch.nn.functional.softplus(logits).sqrt()
    picks = []
    for t in range(logits.shape[0]):
        if tid2eid is not None:
            chosen = tid2eid[int(token_ids[t])].tolist()
        else:
            select = (scores[t] if bias is None else scores[t] + bias).tolist()
            chosen = sorted(range(logits.shape[1]), key=lambda e: (-select[e], e))[:topk]
        s = [scores[t, e].item() for e in chosen]
        picks.append([(e, v / sum(s) * route_scale) for e, v in zip(chosen, s)])
    return picks


def v4_linear(a, w, quantised):
    """V4 Linear: FP8 1x128 activation fake-quant for quantised weights; fp64 sum, output in a's dtype."""
    if quantised:
        a = ops.fp8_fake_quant(a, 128)
    return (a.double() @ w.double().T).to(a.dtype)


def v4_expert(x, w1, w3, w2, quantised, limit, weight=None):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    g = v4_linear(x, w1, quantised).to(acc)
    u = v4_linear(x, w3, quantised).to(acc)
    if limit > 0:
        u = torch.clamp(u, -limit, limit)
        g = torch.clamp(g, max=limit)
    h = g * torch.sigmoid(g) * u
    if weight is not None:
        h = weight * h
    return v4_linear(h.to(x.dtype), w2, quantised)


def dense_loop(x, gate, experts, shared, topk, route_scale, bias=None, token_ids=None, tid2eid=None,
               quantised=False, shared_quantised=False, limit=10.0, shared_limit=0.0):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    logits = x.to(acc) @ gate.to(acc).T
    out = torch.zeros(x.shape, dtype=acc)
    for t, picks in enumerate(loop_route(logits, topk, route_scale, bias, token_ids, tid2eid)):
        for e, weight in picks:
            w1, w3, w2 = (m[e] for m in experts)
            out[t] += v4_expert(x[t:t + 1], w1, w3, w2, quantised, limit, weight)[0].to(acc)
        if shared is not None:
            out[t] += v4_expert(x[t:t + 1], *shared, shared_quantised, shared_limit)[0].to(acc)
    return out.to(x.dtype)


def dense_experts(dtype, count=E, inter=INTER, dim=D):
    """``[w1, w3, w2]``: ``[count, inter, dim]`` twice and ``[count, dim, inter]``, unit-variance outputs."""
    shapes = [(count, inter, dim), (count, inter, dim), (count, dim, inter)]
    return [(torch.randn(*shape) * shape[-1] ** -0.5).to(dtype) for shape in shapes]


def quantise(weights, fmt):
    """(quantised tensors, scales, exact dense fp32 equivalents) of a list of weights."""
    if fmt == "fp8":
        pairs = [ops.fp8_weight_quant(w, 128) for w in weights]
        dense = [ops.fp8_weight_dequant(q, s, 128) for q, s in pairs]
    else:
        pairs = [ops.fp4_quant(w, 32) for w in weights]
        dense = [ops.fp4_dequant(q, s) for q, s in pairs]
    return [q for q, _ in pairs], [s for _, s in pairs], dense


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_float_weights_with_shared_expert(dtype):
    x = torch.randn(T, D).to(dtype)
    gate, bias = torch.randn(E, D) * D**-0.5, torch.randn(E) * 0.1
    w1, w3, w2 = dense_experts(dtype)
    sw1, sw3, sw2 = (m[0] for m in dense_experts(dtype, 1, 2 * INTER))
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    y = ops.moe_ffn(x, gate.to(acc), w1, w3, w2, K, 1.5, bias.to(acc), shared_w1=sw1, shared_w3=sw3, shared_w2=sw2)
    want = dense_loop(x, gate.to(acc), (w1, w3, w2), (sw1, sw3, sw2), K, 1.5, bias.to(acc))
    assert y.dtype == dtype
    assert_close(y, want, dtype)


@pytest.mark.parametrize("fmt", ["fp8", "fp4"])
def test_quantised_routed_and_shared_weights(fmt):
    x = (torch.randn(T, D) * 2).bfloat16()
    gate, bias = torch.randn(E, D) * D**-0.5, torch.randn(E) * 0.1
    (q1, q3, q2), (s1, s3, s2), dense = quantise(dense_experts(torch.float32), fmt)
    (sq1, sq3, sq2), (ss1, ss3, ss2), sdense = quantise([m[0] for m in dense_experts(torch.float32, 1)], "fp8")
    y = ops.moe_ffn(x, gate, q1, q3, q2, K, 1.5, bias, None, None, s1, s3, ops.scale_to_ue8m0(s2),
                    sq1, sq3, sq2, ss1, ss3, ss2, 10.0, 10.0)
    want = dense_loop(x, gate, dense, sdense, K, 1.5, bias, quantised=True, shared_quantised=True, shared_limit=10.0)
    assert_close(y, want, torch.bfloat16)
    # the quantised path differs from plain float weights: the activation fake-quant is really applied
    plain = ops.moe_ffn(x, gate, *[d.bfloat16() for d in dense], K, 1.5, bias)
    assert not torch.equal(plain, dense_loop(x, gate, dense, None, K, 1.5, bias, quantised=True))


def test_hash_routing_clamp_and_empty_experts():
    x = torch.randn(T, 32, dtype=torch.float64) * 4
    gate = torch.randn(E, 32, dtype=torch.float64)
    w1, w3, w2 = (m * 6 for m in dense_experts(torch.float64, E, 48, 32))  # large: the clamp is active
    tid2eid = torch.stack([torch.randperm(E)[:K] for _ in range(20)]).to(torch.int32)
    tid2eid[:, 0] = 0  # expert 0 always used, several others empty for this batch
    token_ids = torch.randint(0, 3, (T,))
    y = ops.moe_ffn(x, gate, w1, w3, w2, K, 2.5, torch.randn(E, dtype=torch.float64), token_ids, tid2eid)
    want = dense_loop(x, gate, (w1, w3, w2), None, K, 2.5, None, token_ids, tid2eid)
    assert_close(y, want, torch.float64)
    loose = ops.moe_ffn(x, gate, w1, w3, w2, K, 2.5, None, token_ids, tid2eid, swiglu_limit=0.0)
    assert_close(loose, dense_loop(x, gate, (w1, w3, w2), None, K, 2.5, None, token_ids, tid2eid, limit=0.0),
                 torch.float64)
    assert (loose - y).abs().max() > 1.0


def test_bad_inputs_name_the_argument():
    x, gate = torch.randn(4, 128), torch.randn(E, 128)
    w1, w3, w2 = dense_experts(torch.float32)
    (q1, q3, q2), (s1, s3, s2), _ = quantise([w1, w3, w2], "fp8")
    with pytest.raises(ValueError, match="'w1_scale'"):
        ops.moe_ffn(x, gate, q1, w3, w2, K, 1.0)
    with pytest.raises(ValueError, match="'w3_scale'"):
        ops.moe_ffn(x, gate, w1, w3, w2, K, 1.0, w3_scale=s3)
    with pytest.raises(ValueError, match="'w2_scale'"):
        ops.moe_ffn(x, gate, q1, q3, q2, K, 1.0, w1_scale=s1, w3_scale=s3, w2_scale=s2[:1])
    with pytest.raises(ValueError, match="'w2'"):
        ops.moe_ffn(x, gate, w1, w3, w2[:, :, :64], K, 1.0)
    with pytest.raises(ValueError, match="'gate'"):
        ops.moe_ffn(x, gate[:, :64], w1, w3, w2, K, 1.0)
    with pytest.raises(ValueError, match="'shared_w2'"):
        ops.moe_ffn(x, gate, w1, w3, w2, K, 1.0, shared_w1=w1[0], shared_w3=w3[0])
    with pytest.raises(ValueError, match="'topk'"):
        ops.moe_ffn(x, gate, w1, w3, w2, E + 1, 1.0)
    small = dense_experts(torch.float32, E, 64, 32)
    (p1, p3, p2), (t1, t3, t2), _ = quantise(small, "fp4")
    with pytest.raises(ValueError, match="multiple of 128"):
        ops.moe_ffn(torch.randn(4, 32), torch.randn(E, 32), p1, p3, p2, K, 1.0, w1_scale=t1, w3_scale=t3,
                    w2_scale=t2)
    assert math.isfinite(ops.moe_ffn(x, gate, w1, w3, w2, K, 1.0).sum().item())
