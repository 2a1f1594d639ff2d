"""Cached decoding equals a full recompute; batching, chunking and padding-free variable lengths are invisible."""

from __future__ import annotations

import pytest
import torch

from v4_ascend.model.config import TINY
from v4_ascend.model.generate import generate, prefill
from v4_ascend.model.transformer import Transformer

# Prompt lengths straddle the window (8), CSA (4) and HCA (8) block boundaries; decode crosses more.
PROMPT_LENS = (3, 11, 6, 17)
DECODE_STEPS = 7
# fp64 model; the FP8/FP4 fake-quant of KV entries and indexer keys rounds in fp32, so last-bit BLAS
# differences between row counts can move a value by one fp32 rounding before quantisation.
TOL = 1e-5


@pytest.fixture(scope="module")
def model64(tiny_checkpoint):
    return Transformer.from_checkpoint(tiny_checkpoint, dtype=torch.float64)


def _prompts(gen):
    return [torch.randint(0, TINY.vocab_size, (n,), generator=gen) for n in PROMPT_LENS]


def _full_logits(model, sequences):
    """Every position's logits from one prefill call of the whole sequences (a fresh cache)."""
    cache = model.new_cache(len(sequences), max(len(s) for s in sequences))
    logits = model.forward(torch.cat(sequences), [len(s) for s in sequences], cache, all_logits=True)
    return logits.split([len(s) for s in sequences])


def test_cached_decode_matches_full_recompute(model64, seed):
    gen = torch.Generator().manual_seed(seed)
    prompts = _prompts(gen)
    steps = list(generate(model64, prompts, DECODE_STEPS, chunk=5))
    generated = torch.stack([s.tokens for s in steps], dim=1)  # [B, steps]
    sequences = [torch.cat((p, g[:-1])) for p, g in zip(prompts, generated)]
    full = _full_logits(model64, sequences)
    for b, prompt in enumerate(prompts):
        for i, step in enumerate(steps):
            expected = full[b][len(prompt) - 1 + i]
            torch.testing.assert_close(step.logits[b], expected, atol=TOL, rtol=TOL,
                                       msg=lambda m, b=b, i=i: f"sequence {b} step {i}: {m}")


def test_sequence_alone_equals_sequence_in_batch(model64, seed):
    gen = torch.Generator().manual_seed(seed)
    prompts = _prompts(gen)
    batched = prefill(model64, model64.new_cache(len(prompts), 32), prompts, chunk=4)
    for b, prompt in enumerate(prompts):
        alone = prefill(model64, model64.new_cache(1, 32), [prompt], chunk=64)
        torch.testing.assert_close(batched[b], alone[0], atol=TOL, rtol=TOL)


def test_future_tokens_do_not_change_past_logits(model64, seed):
    gen = torch.Generator().manual_seed(seed)
    sequence = torch.randint(0, TINY.vocab_size, (20,), generator=gen)
    changed = sequence.clone()
    changed[12:] = (changed[12:] + 1) % TINY.vocab_size
    a, b = _full_logits(model64, [sequence, changed])
    torch.testing.assert_close(a[:12], b[:12], atol=TOL, rtol=TOL)
    assert (a[12:] - b[12:]).abs().max() > 1e-3  # the change is visible from position 12 on


def test_reset_sequence_restarts_it(model64, seed):
    gen = torch.Generator().manual_seed(seed)
    prompts = _prompts(gen)[:2]
    cache = model64.new_cache(2, 32)
    prefill(model64, cache, prompts)
    cache.reset(0)
    assert cache.lengths.tolist() == [0, len(prompts[1])]
    again = model64.forward(prompts[0], [len(prompts[0]), 0], cache)
    fresh = prefill(model64, model64.new_cache(1, 32), [prompts[0]])
    torch.testing.assert_close(again[0], fresh[0], atol=TOL, rtol=TOL)
    assert torch.isnan(again[1]).all()


def test_bf16_model_tracks_fp32(tiny_checkpoint, seed):
    """The production dtype runs end to end and stays close to fp32 on a prompt."""
    gen = torch.Generator().manual_seed(seed)
    prompt = [torch.randint(0, TINY.vocab_size, (9,), generator=gen)]
    logits = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = Transformer.from_checkpoint(tiny_checkpoint, dtype=dtype)
        logits[dtype] = prefill(model, model.new_cache(1, 16), prompt)
    assert torch.isfinite(logits[torch.bfloat16]).all()
    cosine = torch.nn.functional.cosine_similarity(logits[torch.float32], logits[torch.bfloat16], dim=-1)
    assert cosine.item() > 0.9


def _mtp_all(model, sequences, chunk):
    """MTP draft logits of every position t < len-1 (inputs: streams at t, token t+1), fed in chunks."""
    cache = model.new_cache(len(sequences), 32)
    drafts = [[] for _ in sequences]
    done = [0] * len(sequences)
    while any(d < len(s) - 1 for d, s in zip(done, sequences)):
        pieces = [s[d: min(d + chunk, len(s) - 1)] for d, s in zip(done, sequences)]
        nexts = [s[d + 1: d + 1 + len(p)] for d, s, p in zip(done, sequences, pieces)]
        lens = [len(p) for p in pieces]
        h = model.hidden(torch.cat(pieces), lens, cache)
        logits = model.mtp_logits(h, torch.cat(nexts), lens, cache).split(lens)
        for b, rows in enumerate(logits):
            drafts[b].append(rows)
            done[b] += lens[b]
    assert cache.mtp_layers[0].lengths.tolist() == [len(s) - 1 for s in sequences]
    return [torch.cat(rows) for rows in drafts]


def test_mtp_draft_is_chunking_invariant(model64, seed):
    gen = torch.Generator().manual_seed(seed)
    sequences = [torch.randint(0, TINY.vocab_size, (n,), generator=gen) for n in (6, 19)]
    whole = _mtp_all(model64, sequences, chunk=64)
    stepwise = _mtp_all(model64, sequences, chunk=1)  # decode-style, one position per call
    for a, b in zip(whole, stepwise):
        assert a.shape == (a.shape[0], TINY.vocab_size) and torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)


def test_mtp_depends_on_the_next_token(model64, seed):
    gen = torch.Generator().manual_seed(seed)
    sequence = torch.randint(0, TINY.vocab_size, (10,), generator=gen)
    other = sequence.clone()
    other[-1] = (other[-1] + 1) % TINY.vocab_size  # only the last position's next token changes
    a, b = _mtp_all(model64, [sequence, other], chunk=4)
    torch.testing.assert_close(a[:-1], b[:-1], atol=TOL, rtol=TOL)
    assert (a[-1] - b[-1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="'depth'"):
        model64.mtp_logits(torch.zeros(1, 4, TINY.dim, dtype=torch.float64), sequence[:1], [1, 0],
                           model64.new_cache(2, 8), depth=1)
