"""engram_layout against the V4.1-Flash table sizes, a hand-computed small layout, and primes found here
by trial division (independent of the library's primality test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from v4_ascend import ops

V41 = {"layer_ids": [1, 14], "max_ngram": 4, "n_heads": 8, "vocab_size": 16_000_000, "compressed_vocab_size": 99_092}


@pytest.fixture(scope="module")
def v41_layouts():
    return ops.engram_layout(**V41)


def _primes_from(start: int, count: int) -> list[int]:
    """The first ``count`` primes >= start, by trial division with the small primes up to sqrt."""
    limit = math.isqrt(start + 100_000) + 1
    small = [p for p in range(2, limit) if all(p % q for q in range(2, math.isqrt(p) + 1))]
    found, n = [], start
    while len(found) < count:
        if all(n % p for p in small if p * p <= n):
            found.append(n)
        n += 1
    return found


def test_v41_flash_table_sizes(v41_layouts):
    assert [layout.num_rows for layout in v41_layouts] == [384_006_168, 384_016_682]
    assert [layout.layer_id for layout in v41_layouts] == [1, 14]


def test_v41_primes_are_the_first_48_above_the_vocab_in_order(v41_layouts):
    expected = _primes_from(16_000_000, 48)
    got = [int(p) for layout in v41_layouts for p in layout.moduli.flatten()]
    # Each order restarts the search but skips used primes, so layer 1 takes primes #1-24 in
    # (order, head) order and layer 14 primes #25-48.
    assert got == expected


def test_v41_shapes_offsets_and_multipliers(v41_layouts):
    int64_max = 2**63 - 1
    bound = (int64_max // 99_092) // 2
    for layout in v41_layouts:
        for t in (layout.moduli, layout.offsets):
            assert t.dtype == torch.int64 and t.shape == (3, 8)
        primes = [int(p) for p in layout.moduli.flatten()]
        offsets = [int(o) for o in layout.offsets.flatten()]
        assert offsets == [sum(primes[:i]) for i in range(24)]
        mult = layout.multipliers
        assert mult.dtype == torch.int64 and mult.shape == (4,)
        draws = np.random.default_rng(10007 * layout.layer_id).integers(0, bound, size=4, dtype=np.int64)
        assert [int(m) for m in mult] == [2 * int(d) + 1 for d in draws]
        for m in mult.tolist():
            assert m % 2 == 1 and 0 < m < 2 * bound + 1
            assert m * (99_092 - 1) <= int64_max  # a product of a valid token never overflows


def test_small_layout_by_hand():
    a, b = ops.engram_layout([0, 5], 3, 2, 10, 7)
    # primes >= 10: 11 13 17 19 | 23 29 31 37
    assert a.moduli.tolist() == [[11, 13], [17, 19]] and b.moduli.tolist() == [[23, 29], [31, 37]]
    assert a.offsets.tolist() == [[0, 11], [24, 41]] and a.num_rows == 60
    assert b.offsets.tolist() == [[0, 23], [52, 83]] and b.num_rows == 120


def test_prime_search_restarts_per_order_and_skips_used_primes():
    # vocab 14: order 2 takes 17, 19; order 3 restarts at 13 -> next unused primes 23, 29.
    (layout,) = ops.engram_layout([2], 3, 2, 14, 5)
    assert layout.moduli.tolist() == [[17, 19], [23, 29]]
    # A vocab that is itself prime is a valid bucket size (the search starts at vocab_size - 1).
    (layout,) = ops.engram_layout([2], 2, 1, 13, 5)
    assert layout.moduli.tolist() == [[13]]


def test_layout_tensors_are_fresh_per_call():
    first = ops.engram_layout(**V41)[0]
    first.moduli.zero_()
    assert ops.engram_layout(**V41)[0].num_rows == 384_006_168
    assert int(ops.engram_layout(**V41)[0].moduli.min()) > 16_000_000


@pytest.mark.parametrize("kwargs,arg", [
    ({"layer_ids": []}, "layer_ids"),
    ({"layer_ids": [1, 1]}, "layer_ids"),
    ({"layer_ids": [-1]}, "layer_ids"),
    ({"max_ngram": 1}, "max_ngram"),
    ({"n_heads": 0}, "n_heads"),
    ({"vocab_size": 1}, "vocab_size"),
    ({"compressed_vocab_size": 0}, "compressed_vocab_size"),
])
def test_bad_layout_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=f"'{arg}'"):
        ops.engram_layout(**{**V41, **kwargs})
