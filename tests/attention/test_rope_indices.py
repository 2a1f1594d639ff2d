"""RoPE/YaRN, per-head RMS and index builders against direct formulations and causality properties."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from v4_ascend.layers.indices import compressed_indices, ring_window_indices, window_positions
from v4_ascend.layers.norm import head_rms
from v4_ascend.layers.rope import Yarn, apply_rope, layer_rope_frequencies, rope_frequencies, yarn_correction_range
from v4_ascend.model.config import FLASH

V4_YARN = Yarn(factor=16, original_seq_len=65536, beta_fast=32, beta_slow=1)


def test_yarn_range_for_the_compressed_layers():
    assert yarn_correction_range(64, 160000, V4_YARN) == (15, 25)


def test_frequencies_follow_the_formula():
    plain = rope_frequencies(64, 10000)
    assert torch.allclose(plain, torch.tensor([10000 ** (-2 * i / 64) for i in range(32)], dtype=torch.float64))
    base = torch.tensor([160000 ** (-2 * i / 64) for i in range(32)], dtype=torch.float64)
    yarn = rope_frequencies(64, 160000, V4_YARN)
    for i in range(32):
        ramp = min(max((i - 15) / 10, 0.0), 1.0)
        assert math.isclose(yarn[i], base[i] * ramp / 16 + base[i] * (1 - ramp), rel_tol=1e-12)
    assert torch.equal(yarn[:16], base[:16]) and torch.allclose(yarn[25:], base[25:] / 16)
    assert torch.equal(layer_rope_frequencies(FLASH, 0), plain)
    assert torch.equal(layer_rope_frequencies(FLASH, 4), yarn) and torch.equal(layer_rope_frequencies(FLASH, 128), yarn)


def test_rope_is_interleaved_on_the_tail_as_complex_multiplication():
    T, H, D = 7, 3, 80
    freqs = rope_frequencies(16, 160000, V4_YARN)
    x = torch.randn(T, H, D, dtype=torch.float64)
    pos = torch.tensor([0, 1, 5, 127, 128, 65536, 1048575])
    got = apply_rope(x, pos, freqs)
    assert torch.equal(got[..., :64], x[..., :64])
    as_complex = torch.view_as_complex(x[..., 64:].reshape(T, H, 8, 2).contiguous())
    turn = torch.polar(torch.ones(T, 8, dtype=torch.float64), pos[:, None].double() * freqs[None])
    want = torch.view_as_real(as_complex * turn[:, None]).reshape(T, H, 16)
    torch.testing.assert_close(got[..., 64:], want, atol=1e-12, rtol=1e-12)
    unit = torch.zeros(1, 80, dtype=torch.float64)
    unit[0, 64] = 1.0  # channel pair (64, 65) is one complex number, not (64, 72) as in NeoX half-split
    rotated = apply_rope(unit, torch.tensor([3]), freqs)[0]
    assert math.isclose(rotated[64], math.cos(3 * freqs[0]), abs_tol=1e-15)
    assert math.isclose(rotated[65], math.sin(3 * freqs[0]), abs_tol=1e-15) and rotated[72] == 0


def test_inverse_undoes_and_scores_depend_on_relative_position():
    freqs = rope_frequencies(64, 10000)
    x = torch.randn(5, 2, 128)
    pos = torch.tensor([0, 3, 200, 4000, 1 << 20])
    torch.testing.assert_close(apply_rope(apply_rope(x, pos, freqs), pos, freqs, inverse=True), x,
                               atol=1e-5, rtol=1e-5)
    q, k = torch.randn(1, 128, dtype=torch.float64), torch.randn(1, 128, dtype=torch.float64)

    def score(tq, tk):
        return float(apply_rope(q, torch.tensor([tq]), freqs) @ apply_rope(k, torch.tensor([tk]), freqs).T)

    assert math.isclose(score(10, 3), score(1007, 1000), rel_tol=1e-9)
    assert torch.equal(apply_rope(x.bfloat16(), pos, freqs)[..., :64], x.bfloat16()[..., :64])


def test_head_rms_is_weightless_and_per_head():
    q = torch.randn(4, 3, 64) * torch.tensor([0.1, 1.0, 30.0])[None, :, None]
    out = head_rms(q, 1e-6)
    mean_square = q.pow(2).mean(-1)
    torch.testing.assert_close(out.pow(2).mean(-1), mean_square / (mean_square + 1e-6), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out * q.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt(), q)


@settings(max_examples=40, deadline=None)
@given(t=st.integers(0, 3000), window=st.sampled_from([1, 4, 128]))
def test_prefill_window_is_causal_and_contains_t(t, window):
    pos = window_positions(torch.tensor([t], dtype=torch.int32), window)[0]
    valid = pos[pos >= 0]
    assert pos.shape[0] == window and valid.numel() == min(window, t + 1)
    assert int(valid.max()) == t and int(valid.min()) == max(0, t - window + 1)
    assert torch.equal(valid, torch.arange(max(0, t - window + 1), t + 1, dtype=torch.int32))


@settings(max_examples=30, deadline=None)
@given(length=st.integers(1, 400), window=st.sampled_from([4, 128]))
def test_ring_window_lists_the_last_tokens_oldest_first(length, window):
    ring = torch.full((window,), -1)
    for p in range(length):  # decode writes token p into slot p % W before attending
        ring[p % window] = p
    slots = ring_window_indices(torch.tensor([length - 1]), window, base=torch.tensor([5 * window]))[0]
    valid = slots[slots >= 0]
    assert (slots[valid.numel():] == -1).all()
    seen = ring[valid - 5 * window]
    assert torch.equal(seen, torch.arange(max(0, length - window), length))


@settings(max_examples=40, deadline=None)
@given(t=st.lists(st.integers(0, 2000), min_size=1, max_size=6), ratio=st.sampled_from([4, 128]))
def test_compressed_indices_never_reach_the_current_block(t, ratio):
    q_pos = torch.tensor(t, dtype=torch.int32)
    base = torch.arange(len(t), dtype=torch.int32) * 1000
    idx, length = compressed_indices(q_pos, ratio, base)
    for row, (p, n) in enumerate(zip(t, length.tolist())):
        valid = idx[row][idx[row] >= 0] - base[row]
        assert n == (p + 1) // ratio and torch.equal(valid, torch.arange(n, dtype=torch.int32))
        assert (valid * ratio + ratio - 1 <= p).all()  # every entry's last token is at or before t
