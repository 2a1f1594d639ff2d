"""engram_hash bit-exact against a NumPy uint64 implementation written here, and decode with history
equal to hashing the whole sequence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from v4_ascend import ops

V_COMP, PAD = 99_092, 2


@pytest.fixture(scope="module")
def layer1():
    return ops.engram_layout([1, 14], 4, 8, 16_000_000, V_COMP)[0]


def numpy_hash(ids, multipliers, moduli, offsets, pad_id, history=None):
    """Independent oracle: uint64 products (wrap mod 2^64) and XOR, reinterpreted as int64, floor mod."""
    ids = np.asarray(ids, dtype=np.int64)
    mult = np.asarray(multipliers, dtype=np.int64).view(np.uint64)
    moduli, offsets = np.asarray(moduli, dtype=np.int64), np.asarray(offsets, dtype=np.int64)
    B, S = ids.shape
    N, H = mult.shape[0], moduli.shape[1]
    past = np.full((B, N - 1), pad_id, dtype=np.int64) if history is None else np.asarray(history, dtype=np.int64)
    seq = np.concatenate([past, ids], axis=1).view(np.uint64)
    out = np.empty((B, S, (N - 1) * H), dtype=np.int64)
    for s in range(S):
        t = N - 1 + s  # position of token s in seq
        h = seq[:, t] * mult[0]
        for n in range(2, N + 1):
            h = h ^ (seq[:, t - (n - 1)] * mult[n - 1])
            signed = h.view(np.int64)
            for j in range(H):
                out[:, s, (n - 2) * H + j] = np.mod(signed, moduli[n - 2, j]) + offsets[n - 2, j]
    return torch.from_numpy(out)


def _hash(layout, ids, history=None, pad=PAD):
    return ops.engram_hash(ids, layout.multipliers, layout.moduli, layout.offsets, pad, history)


def _history_before(ids, start, back, pad):
    """The ``back`` ids before position ``start``, oldest first, padded with ``pad`` before the start."""
    B = ids.shape[0]
    past = torch.cat([torch.full((B, back), pad, dtype=torch.int64), ids[:, :start]], dim=1)
    return past[:, past.shape[1] - back :]


def test_v41_matches_numpy(layer1):
    ids = torch.randint(0, V_COMP, (3, 50))
    rows = _hash(layer1, ids)
    assert rows.dtype == torch.int64 and rows.shape == (3, 50, 24)
    expected = numpy_hash(ids, layer1.multipliers, layer1.moduli, layer1.offsets, PAD)
    torch.testing.assert_close(rows, expected, atol=0, rtol=0)
    # Every column stays inside its own sub-table.
    low, high = layer1.offsets.flatten(), (layer1.offsets + layer1.moduli).flatten()
    assert ((rows >= low) & (rows < high)).all()


def test_first_positions_use_pad(layer1):
    ids = torch.randint(0, V_COMP, (1, 3))
    rows = _hash(layer1, ids)
    explicit = _hash(layer1, ids, torch.full((1, 3), PAD))
    torch.testing.assert_close(rows, explicit, atol=0, rtol=0)
    # Position 0 looks back at pads only, like position 1 of [pad, ids[0]].
    padded = torch.tensor([[PAD, int(ids[0, 0])]])
    torch.testing.assert_close(rows[:, 0], _hash(layer1, padded)[:, 1], atol=0, rtol=0)


def test_bigram_column_by_hand(layer1):
    ids = torch.tensor([[7, 11]])
    mu, p, off = layer1.multipliers.tolist(), layer1.moduli.tolist(), layer1.offsets.tolist()
    h2 = (11 * mu[0]) ^ (7 * mu[1])  # position 1: tok_0 = 11, tok_1 = 7 (no overflow for these ids)
    rows = _hash(layer1, ids)
    assert rows[0, 1, :8].tolist() == [h2 % p[0][j] + off[0][j] for j in range(8)]
    h3 = h2 ^ (PAD * mu[2])
    assert rows[0, 1, 8:16].tolist() == [h3 % p[1][j] + off[1][j] for j in range(8)]


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_max=st.integers(2, 5),
    heads=st.integers(1, 4),
    big_ids=st.booleans(),
    with_history=st.booleans(),
)
def test_wraparound_matches_numpy(seed, n_max, heads, big_ids, with_history):
    """Random odd multipliers over the whole int64 range (negative too) and huge ids: products wrap."""
    gen = torch.Generator().manual_seed(seed)
    full = torch.randint(-(2**63), 2**63 - 1, (n_max,), generator=gen, dtype=torch.int64)
    multipliers = full | 1
    moduli = torch.randint(1, 2**40, (n_max - 1, heads), generator=gen, dtype=torch.int64)
    offsets = torch.randint(0, 2**20, (n_max - 1, heads), generator=gen, dtype=torch.int64)
    high = 2**62 if big_ids else 1000
    ids = torch.randint(0, high, (2, 7), generator=gen, dtype=torch.int64)
    history = torch.randint(0, high, (2, n_max - 1), generator=gen, dtype=torch.int64) if with_history else None
    rows = ops.engram_hash(ids, multipliers, moduli, offsets, 5, history)
    expected = numpy_hash(ids, multipliers, moduli, offsets, 5, history)
    torch.testing.assert_close(rows, expected, atol=0, rtol=0)


def test_decode_with_history_equals_whole_sequence(layer1):
    ids = torch.randint(0, V_COMP, (2, 20))
    whole = _hash(layer1, ids)
    steps = [_hash(layer1, ids[:, t : t + 1], _history_before(ids, t, 3, PAD)) for t in range(20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=0, rtol=0)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 30), max_size=5), seed=st.integers(0, 2**31 - 1))
def test_chunked_prefill_equals_whole_sequence(cuts, seed):
    layout = ops.engram_layout([1, 14], 4, 8, 16_000_000, V_COMP)[1]
    ids = torch.randint(0, V_COMP, (2, 30), generator=torch.Generator().manual_seed(seed))
    whole = _hash(layout, ids)
    bounds = sorted({0, 30, *cuts})
    chunks = [_hash(layout, ids[:, a:b], _history_before(ids, a, 3, PAD)) for a, b in itertools.pairwise(bounds)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), whole, atol=0, rtol=0)


def test_history_is_read_oldest_first(layer1):
    ids = torch.randint(0, V_COMP, (1, 1))
    history = torch.tensor([[10, 20, 30]])
    # [10, 20, 30, x] hashed from the start ends with the same rows as x after that history.
    seq = torch.cat([history, ids], dim=1)
    torch.testing.assert_close(_hash(layer1, ids, history)[:, 0], _hash(layer1, seq)[:, 3], atol=0, rtol=0)
    assert not torch.equal(_hash(layer1, ids, history), _hash(layer1, ids, history.flip(1)))


def test_empty_sequence(layer1):
    assert _hash(layer1, torch.zeros(2, 0, dtype=torch.int64)).shape == (2, 0, 24)


def _bad(name, layer):
    ids = torch.randint(0, V_COMP, (2, 4))
    m, p, o = layer.multipliers, layer.moduli, layer.offsets
    return {
        "ids-int32": (lambda: ops.engram_hash(ids.int(), m, p, o, PAD), "'ids'"),
        "ids-negative": (lambda: ops.engram_hash(-ids - 1, m, p, o, PAD), "'ids'"),
        "mult-short": (lambda: ops.engram_hash(ids, m[:1], p[:0], o[:0], PAD), "'multipliers'"),
        "moduli-shape": (lambda: ops.engram_hash(ids, m, p[:2], o, PAD), "'moduli'"),
        "moduli-zero": (lambda: ops.engram_hash(ids, m, p * 0, o, PAD), "'moduli'"),
        "offsets-shape": (lambda: ops.engram_hash(ids, m, p, o[:, :4], PAD), "'offsets'"),
        "pad-negative": (lambda: ops.engram_hash(ids, m, p, o, -1), "'pad_id'"),
        "history-shape": (lambda: ops.engram_hash(ids, m, p, o, PAD, ids[:, :2]), "'history'"),
    }[name]


@pytest.mark.parametrize("name", [
    "ids-int32", "ids-negative", "mult-short", "moduli-shape", "moduli-zero", "offsets-shape", "pad-negative",
    "history-shape",
])
def test_bad_input_names_the_argument(name, layer1):
    call, arg = _bad(name, layer1)
    with pytest.raises(ValueError, match=arg):
        call()
