"""engram_gate against a per-token, per-stream fp64 formulation written here (v4_math.md §5.3 (f), (g)),
its gradient and its mask."""

from __future__ import annotations

import math

import pytest
import torch

from v4_ascend import ops
from v4_ascend.testing.tolerance import assert_close


def gate_oracle(h, key, value, weight, mask=None):
    """Loops over tokens and streams in fp64."""
    h, key, value, weight = (t.double() for t in (h, key, value, weight))
    T, n, D = h.shape
    out = h.clone()
    for t in range(T):
        for i in range(n):
            rms_h = math.sqrt(float((h[t, i] ** 2).mean()) + 1e-20)
            rms_k = math.sqrt(float((key[t, i] ** 2).mean()) + 1e-20)
            dot = float((h[t, i] * weight[i] * key[t, i]).sum()) / (rms_h * rms_k * math.sqrt(D))
            signed_root = math.copysign(math.sqrt(max(abs(dot), 1e-6)), dot) if dot != 0 else 0.0
            gate = 1.0 / (1.0 + math.exp(-signed_root))
            if mask is not None and not mask[t]:
                gate = 0.0
            out[t, i] = h[t, i] + gate * value[t]
    return out


def _inputs(T, n, D, dtype, key_scale=1.0):
    h = torch.randn(T, n, D).to(dtype)
    key = (torch.randn(T, n, D) * key_scale).to(dtype)
    value = torch.randn(T, D).to(dtype)
    weight = torch.randn(n, D) * 0.5 + 1.0
    return h, key, value, weight


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,n,D", [(5, 4, 256), (2, 4, 5120), (3, 2, 7)])
def test_matches_per_token_formulation(dtype, T, n, D):
    h, key, value, weight = _inputs(T, n, D, dtype)
    mask = torch.rand(T) < 0.6
    out = ops.engram_gate(h, key, value, weight, mask)
    assert out.dtype == dtype and out.shape == h.shape
    assert_close(out, gate_oracle(h, key, value, weight, mask), dtype, "engram_gate")
    assert_close(ops.engram_gate(h, key, value, weight), gate_oracle(h, key, value, weight), dtype, "unmasked")


def test_gate_is_strongly_correlated_with_matching_key():
    """A key equal to h (unit weight) gives the largest gate; its negation the smallest."""
    h, _, value, _ = _inputs(1, 2, 64, torch.float64)
    ones = torch.ones(2, 64, dtype=torch.float64)
    # dot = sum(h^2) / (rms(h)^2 * sqrt(D)) = sqrt(D) = 8, so gate = sigmoid(sqrt(8)).
    out = ops.engram_gate(h, h, value, ones)
    expected_gate = 1 / (1 + math.exp(-math.sqrt(8.0)))
    torch.testing.assert_close(out - h, expected_gate * value.unsqueeze(1).expand_as(h))
    out = ops.engram_gate(h, -h, value, ones)
    torch.testing.assert_close(out - h, (1 - expected_gate) * value.unsqueeze(1).expand_as(h))


def test_zero_key_gives_half_gate_and_mask_gives_identity():
    h, key, value, weight = _inputs(3, 4, 32, torch.float32)
    out = ops.engram_gate(h, torch.zeros_like(key), value, weight)
    torch.testing.assert_close(out, h + 0.5 * value.unsqueeze(1))
    mask = torch.tensor([True, False, True])
    out = ops.engram_gate(h, key, value, weight, mask)
    assert torch.equal(out[1], h[1])  # masked tokens are untouched, bit for bit
    assert not torch.equal(out[0], h[0])


def test_leading_dimensions_are_batched():
    h, key, value, weight = _inputs(6, 4, 16, torch.float32)
    mask = torch.rand(6) < 0.5
    flat = ops.engram_gate(h, key, value, weight, mask)
    batched = ops.engram_gate(h.view(2, 3, 4, 16), key.view(2, 3, 4, 16), value.view(2, 3, 16), weight, mask.view(2, 3))
    torch.testing.assert_close(batched.view(6, 4, 16), flat, atol=0, rtol=0)


def test_gradcheck_fp64():
    # The gate is sqrt(|dot|) with a clamp at 1e-6: not differentiable at dot = 0, and finite differences
    # are meaningless near it. Keys along +h or -h (plus noise) and positive weights keep every |dot| of
    # order 1, with both signs of the gate's argument.
    h, _, value, _ = _inputs(3, 4, 6, torch.float64)
    sign = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64).view(3, 1, 1)
    key = sign * h + 0.1 * torch.randn_like(h)
    weight = torch.rand(4, 6, dtype=torch.float64) + 0.5
    h, key, value, weight = (t.requires_grad_() for t in (h, key, value, weight))
    mask = torch.tensor([True, False, True])
    assert torch.autograd.gradcheck(ops.engram_gate, (h, key, value, weight))
    assert torch.autograd.gradcheck(lambda *a: ops.engram_gate(*a, mask), (h, key, value, weight))


def test_bf16_backward_reaches_every_input():
    inputs = [t.requires_grad_() for t in _inputs(2, 4, 32, torch.bfloat16)]
    ops.engram_gate(*inputs).float().square().sum().backward()
    for t in inputs:
        assert t.grad is not None and t.grad.dtype == t.dtype and t.grad.abs().sum() > 0


def _bad(name):
    h, key, value, weight = _inputs(2, 4, 8, torch.float32)
    return {
        "h-rank": (lambda: ops.engram_gate(h[0, 0], key, value, weight), "'h'"),
        "h-empty-d": (lambda: ops.engram_gate(h[..., :0], key[..., :0], value[..., :0], weight[:, :0]), "'h'"),
        "key-shape": (lambda: ops.engram_gate(h, key[:, :3], value, weight), "'key'"),
        "key-dtype": (lambda: ops.engram_gate(h, key.double(), value, weight), "'key'"),
        "value-shape": (lambda: ops.engram_gate(h, key, value[:, :4], weight), "'value'"),
        "weight-shape": (lambda: ops.engram_gate(h, key, value, weight[:2]), "'weight'"),
        "mask-dtype": (lambda: ops.engram_gate(h, key, value, weight, torch.ones(2)), "'mask'"),
        "mask-shape": (lambda: ops.engram_gate(h, key, value, weight, torch.ones(3, dtype=torch.bool)), "'mask'"),
    }[name]


@pytest.mark.parametrize(
    "name", ["h-rank", "h-empty-d", "key-shape", "key-dtype", "value-shape", "weight-shape", "mask-dtype", "mask-shape"]
)
def test_bad_input_names_the_argument(name):
    call, arg = _bad(name)
    with pytest.raises(ValueError, match=arg):
        call()

