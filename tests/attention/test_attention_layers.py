"""Attention layers: prefill(T) == prefill(P) + decode, batching, reset, causality (tiny V4-shaped config)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from v4_ascend.layers.attention import csa_attention, hca_attention, window_attention
from v4_ascend.layers.cache import AttentionCache
from v4_ascend.testing.attention_weights import random_attention_weights, tiny_config

CONFIG = tiny_config()  # window 8, CSA ratio 4 (top-3), HCA ratio 16
LAYERS = {0: window_attention, 4: csa_attention, 16: hca_attention}
MAX_LEN = 64
DTYPE = torch.float64


def make_layer(ratio, seed=0):
    weights = random_attention_weights(CONFIG, ratio, DTYPE, torch.Generator().manual_seed(seed))
    return weights, lambda batch=1: AttentionCache(CONFIG, ratio, batch, MAX_LEN, DTYPE)


def run_chunks(ratio, weights, cache, x, chunks):
    """Feed one sequence's tokens in the given chunk sizes; returns concatenated outputs and picks."""
    ys, picks, start = [], [], 0
    for size in chunks:
        out = LAYERS[ratio](x[start:start + size], weights, cache, [size], CONFIG)
        ys.append(out.y)
        picks.append(out.compressed_idx)
        start += size
    return torch.cat(ys), picks


def _assert_same_picks(whole, split, T):
    """Row t of the one-shot prefill's candidates == the candidates of the call that processed t."""
    rows = torch.cat([p if p.shape[1] == whole.shape[1] else _pad(p, whole.shape[1]) for p in split])
    assert rows.shape[0] == T
    assert torch.equal(rows, whole)


def _pad(idx, width):
    return torch.cat((idx, idx.new_full((idx.shape[0], width - idx.shape[1]), -1)), dim=1)


@pytest.mark.parametrize("ratio", [0, 4, 16])
@pytest.mark.parametrize("T,P", [(40, 0), (40, 1), (40, 6), (40, 13), (40, 17), (40, 40), (3, 1), (11, 5)])
def test_prefill_equals_prefill_then_decode(ratio, T, P):
    weights, new_cache = make_layer(ratio)
    x = torch.randn(T, CONFIG.dim, dtype=DTYPE)
    whole_cache, split_cache = new_cache(), new_cache()
    y_whole, (whole_picks,) = run_chunks(ratio, weights, whole_cache, x, [T])
    y_split, split_picks = run_chunks(ratio, weights, split_cache, x, [P] + [1] * (T - P))
    torch.testing.assert_close(y_split, y_whole, atol=1e-10, rtol=1e-10)
    assert torch.equal(whole_cache.lengths, split_cache.lengths)
    for name, tensor in whole_cache.tensors().items():
        if not name.endswith("state"):  # entries, index keys and the window: equal up to GEMM rounding
            torch.testing.assert_close(split_cache.tensors()[name], tensor, atol=1e-12, rtol=1e-12, msg=name)
    if ratio == 4:  # the indexer picks the same entries for every query
        _assert_same_picks(whole_picks, [p for p in split_picks if p.shape[0]], T)
        assert (whole_picks >= 0).sum(1).tolist() == [min(3, (t + 1) // 4) for t in range(T)]


@pytest.mark.parametrize("ratio", [4, 16])
def test_chunked_prefill_with_chunks_crossing_blocks(ratio):
    weights, new_cache = make_layer(ratio)
    x = torch.randn(50, CONFIG.dim, dtype=DTYPE)
    y_whole, _ = run_chunks(ratio, weights, new_cache(), x, [50])
    y_chunks, _ = run_chunks(ratio, weights, new_cache(), x, [7, 10, 2, 0, 18, 1, 12])
    torch.testing.assert_close(y_chunks, y_whole, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("ratio", [0, 4, 16])
def test_batched_sequences_of_different_lengths_equal_separate_runs(ratio):
    weights, new_cache = make_layer(ratio)
    prompts, decode_steps = [5, 19, 0], 6
    xs = [torch.randn(n + decode_steps, CONFIG.dim, dtype=DTYPE) for n in prompts]
    batched = new_cache(batch=3)
    outs = [[] for _ in prompts]
    y = LAYERS[ratio](torch.cat([x[:n] for x, n in zip(xs, prompts)]), weights, batched, prompts, CONFIG).y
    for b, part in enumerate(y.split(prompts)):
        outs[b].append(part)
    for step in range(decode_steps):
        y = LAYERS[ratio](torch.stack([x[n + step] for x, n in zip(xs, prompts)]), weights, batched, [1, 1, 1],
                          CONFIG).y
        for b in range(3):
            outs[b].append(y[b:b + 1])
    for b, (x, n) in enumerate(zip(xs, prompts)):
        alone, _ = run_chunks(ratio, weights, new_cache(), x, [n] + [1] * decode_steps)
        torch.testing.assert_close(torch.cat(outs[b]), alone, atol=1e-10, rtol=1e-10)
    assert batched.lengths.tolist() == [n + decode_steps for n in prompts]


@pytest.mark.parametrize("ratio", [4, 16])
def test_reset_sequence_behaves_like_a_fresh_cache(ratio):
    weights, new_cache = make_layer(ratio)
    cache = new_cache(batch=2)
    LAYERS[ratio](torch.randn(22, CONFIG.dim, dtype=DTYPE), weights, cache, [9, 13], CONFIG)
    cache.reset(1)
    assert cache.lengths.tolist() == [9, 0] and torch.isneginf(cache.score_state[1]).all()
    x = torch.randn(3, CONFIG.dim, dtype=DTYPE)  # shorter than a block: would see stale overlap rows
    y = LAYERS[ratio](x, weights, cache, [0, 3], CONFIG).y
    torch.testing.assert_close(y, run_chunks(ratio, weights, new_cache(), x, [3])[0], atol=1e-12, rtol=1e-12)


@settings(max_examples=8, deadline=None)
@given(ratio=st.sampled_from([0, 4, 16]), T=st.integers(2, 45), data=st.data())
def test_no_future_token_influences_an_output(ratio, T, data):
    t0 = data.draw(st.integers(1, T - 1))
    weights, new_cache = make_layer(ratio)
    x = torch.randn(T, CONFIG.dim, dtype=DTYPE)
    perturbed = x.clone()
    perturbed[t0:] = torch.randn(T - t0, CONFIG.dim, dtype=DTYPE)
    out = LAYERS[ratio](x, weights, new_cache(), [T], CONFIG)
    out_perturbed = LAYERS[ratio](perturbed, weights, new_cache(), [T], CONFIG)
    torch.testing.assert_close(out.y[:t0], out_perturbed.y[:t0], atol=1e-12, rtol=0)
    assert not torch.allclose(out.y[t0:], out_perturbed.y[t0:])
    if ratio:
        visible = (torch.arange(T) + 1) // ratio
        idx = out.compressed_idx
        assert ((idx < visible[:, None]) | (idx == -1)).all()  # no entry of an unfinished block


def test_layer_type_and_argument_errors():
    weights, new_cache = make_layer(16)
    with pytest.raises(ValueError, match="'cache' has ratio 16, the layer needs 4"):
        csa_attention(torch.randn(2, CONFIG.dim, dtype=DTYPE), weights, new_cache(), [2], CONFIG)
    with pytest.raises(ValueError, match="'seq_lens' must be"):
        hca_attention(torch.randn(2, CONFIG.dim, dtype=DTYPE), weights, new_cache(), [3], CONFIG)
    with pytest.raises(ValueError, match="exceed the cache's max_len"):
        hca_attention(torch.randn(MAX_LEN + 1, CONFIG.dim, dtype=DTYPE), weights, new_cache(), [MAX_LEN + 1], CONFIG)
