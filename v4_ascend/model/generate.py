"""Batched generation: chunked prefill of prompts of different lengths, single-token decode, sampling.

:func:`generate` is an iterator: it yields one :class:`Step` (the next token of every sequence and the
logits it was drawn from) as soon as it is known, so callers can stream tokens. Sampling is greedy for
``temperature == 0``, else temperature + nucleus (top-p) sampling from a seeded ``torch.Generator``:
the same seed gives the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from v4_ascend.model.transformer import ModelCache, Transformer


@dataclass
class Step:
    """One generated token per sequence: ``tokens [B]`` int64 and the fp32 ``logits [B, V]`` behind them."""

    tokens: torch.Tensor
    logits: torch.Tensor


def sample(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids ``[B]`` from fp32 ``logits [B, V]``.

    ``temperature == 0`` is greedy (argmax, lowest id on ties). Otherwise the softmax of
    ``logits / temperature`` is restricted to the smallest set of most likely tokens whose probability
    reaches ``top_p`` (the most likely token always stays), renormalised, and sampled with ``generator``.
    """
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"sample: need 'temperature' >= 0 and 0 < 'top_p' <= 1, got {temperature}, {top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the more likely tokens
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    choice = torch.multinomial(sorted_probs.cpu(), 1, generator=generator).to(logits.device)
    return order.gather(-1, choice).squeeze(-1)


def prefill(model: Transformer, cache: ModelCache, prompts: Sequence[torch.Tensor], chunk: int = 64) -> torch.Tensor:
    """Feed ``prompts`` (one 1-D id tensor per cached sequence, any lengths >= 1) in chunks of up to ``chunk``
    tokens per sequence; returns the fp32 logits ``[B, V]`` of each prompt's last token."""
    if len(prompts) != cache.batch or min(len(p) for p in prompts) < 1 or chunk < 1:
        raise ValueError(f"prefill: need {cache.batch} non-empty prompts and chunk >= 1")
    last = torch.full((cache.batch, model.config.vocab_size), float("nan"), device=model.device)
    done = [0] * len(prompts)
    while any(d < len(p) for d, p in zip(done, prompts)):
        pieces = [p[d: d + chunk] for d, p in zip(done, prompts)]
        logits = model.forward(torch.cat(pieces), [len(piece) for piece in pieces], cache)
        for b, piece in enumerate(pieces):
            done[b] += len(piece)
            if len(piece) and done[b] == len(prompts[b]):
                last[b] = logits[b]
    return last


def generate(model: Transformer, prompts: Sequence[torch.Tensor], max_new: int, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, chunk: int = 64, cache: ModelCache | None = None) -> Iterator[Step]:
    """Yield ``max_new`` steps of batched generation after a chunked prefill of ``prompts``.

    Each sequence continues from its own prompt length; every decode step feeds one token per sequence.
    ``cache`` (default: a fresh one sized for the longest prompt + ``max_new``) is left holding the
    prompts and all generated tokens but the last.
    """
    prompts = [torch.as_tensor(p, dtype=torch.int64) for p in prompts]
    if cache is None:
        cache = model.new_cache(len(prompts), max(len(p) for p in prompts) + max_new)
    generator = torch.Generator().manual_seed(seed)
    logits = prefill(model, cache, prompts, chunk)
    for step in range(max_new):
        tokens = sample(logits, temperature, top_p, generator)
        yield Step(tokens, logits)
        if step + 1 < max_new:
            logits = model.forward(tokens, [1] * len(prompts), cache)
