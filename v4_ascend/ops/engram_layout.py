"""Engram table layout (v4_math.md §5.3 (c), (d)): hash multipliers, prime bucket sizes and row offsets.

Everything here is plain Python/NumPy run once at model load; the per-token work is the
``engram_hash`` op, which takes a layer's ``multipliers``, ``moduli`` and ``offsets`` as tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# The seed of a layer's multipliers is LAYER_SEED_PRIME * layer_id (numpy.random.default_rng).
LAYER_SEED_PRIME = 10007


@dataclass(frozen=True)
class EngramLayerLayout:
    """Hash parameters of one Engram layer's table.

    Attributes:
        layer_id: the model layer the table belongs to.
        multipliers: ``[max_ngram]`` int64 odd multipliers, one per look-back ``k = 0..max_ngram-1``.
        moduli: ``[max_ngram-1, n_heads]`` int64 distinct primes, one per (n-gram order 2.., head).
        offsets: ``[max_ngram-1, n_heads]`` int64 first row of each (order, head) sub-table: exclusive
            prefix sums of ``moduli`` in (order, head) order.
        num_rows: rows of the layer's table, the sum of its primes.
    """

    layer_id: int
    multipliers: torch.Tensor
    moduli: torch.Tensor
    offsets: torch.Tensor
    num_rows: int


def _fail(arg: str, expected: str, got: object) -> None:
    raise ValueError(f"engram_layout: '{arg}' must be {expected}, got {got!r}")


@functools.lru_cache(maxsize=16)
def _bucket_primes(
    n_layers: int, n_orders: int, n_heads: int, vocab_size: int
) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """``[layer][order][head]`` primes: each order restarts at ``vocab_size - 1`` and takes the next
    primes not used before (anywhere), so all primes are distinct. Cached: it only depends on counts."""
    import sympy  # imported here: it adds ~0.7 s to ``import v4_ascend`` and only the layout needs it

    seen: set[int] = set()
    layers = []
    for _ in range(n_layers):
        orders = []
        for _ in range(n_orders):
            candidate, heads = vocab_size - 1, []
            for _ in range(n_heads):
                candidate = sympy.nextprime(candidate)
                while candidate in seen:
                    candidate = sympy.nextprime(candidate)
                seen.add(candidate)
                heads.append(int(candidate))
            orders.append(tuple(heads))
        layers.append(tuple(orders))
    return tuple(layers)


def hash_multipliers(layer_id: int, max_ngram: int, compressed_vocab_size: int) -> torch.Tensor:
    """``[max_ngram]`` int64 odd multipliers of one layer.

    Drawn with ``numpy.random.default_rng(10007 * layer_id).integers(0, bound, max_ngram, int64)``,
    ``bound = floor(floor((2^63 - 1) / compressed_vocab_size) / 2)`` (at least 1), then ``x -> 2x + 1``,
    so that ``token * multiplier`` stays below 2^63 for every compressed token.
    """
    bound = max(1, (int(np.iinfo(np.int64).max) // compressed_vocab_size) // 2)
    draws = np.random.default_rng(LAYER_SEED_PRIME * layer_id).integers(0, bound, size=max_ngram, dtype=np.int64)
    return torch.from_numpy(draws * 2 + 1)


def engram_layout(
    layer_ids: Sequence[int],
    max_ngram: int,
    n_heads: int,
    vocab_size: int,
    compressed_vocab_size: int,
) -> list[EngramLayerLayout]:
    """Build the hash layout of every Engram layer exactly as V4.1 does (v4_math.md §5.3 (c), (d)).

    Args:
        layer_ids: model layers carrying an Engram table, in config order (V4.1-Flash: ``[1, 14]``);
            distinct, non-negative. The order matters: primes are handed out layer by layer.
        max_ngram: largest n-gram order N >= 2 (V4.1: 4, i.e. orders 2, 3, 4).
        n_heads: hash heads per order (V4.1: 8).
        vocab_size: the prime search start ``engram_vocab_size`` (V4.1: 16,000,000); every prime is
            ``>= vocab_size``.
        compressed_vocab_size: size of the compressed token space (V4.1: 99,092); bounds the multipliers.

    Returns:
        One :class:`EngramLayerLayout` per layer id, in order. With the V4.1-Flash config the
        ``num_rows`` are 384,006,168 and 384,016,682.

    Raises:
        ValueError: naming the argument, for an empty/duplicate/negative layer id list, ``max_ngram < 2``,
            ``n_heads < 1``, ``vocab_size < 2`` or ``compressed_vocab_size < 1``.
    """
    ids = [int(i) for i in layer_ids]
    if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
        _fail("layer_ids", "a non-empty list of distinct non-negative layer indices", layer_ids)
    for arg, value, low in (
        ("max_ngram", max_ngram, 2),
        ("n_heads", n_heads, 1),
        ("vocab_size", vocab_size, 2),
        ("compressed_vocab_size", compressed_vocab_size, 1),
    ):
        if int(value) != value or value < low:
            _fail(arg, f"an integer >= {low}", value)
    primes = _bucket_primes(len(ids), max_ngram - 1, n_heads, vocab_size)
    layouts = []
    for layer_id, layer_primes in zip(ids, primes):
        moduli = torch.tensor(layer_primes, dtype=torch.int64)
        ends = moduli.flatten().cumsum(0)
        layouts.append(
            EngramLayerLayout(
                layer_id=layer_id,
                multipliers=hash_multipliers(layer_id, max_ngram, compressed_vocab_size),
                moduli=moduli,
                offsets=(ends - moduli.flatten()).view_as(moduli),
                num_rows=int(ends[-1]),
            )
        )
    return layouts
