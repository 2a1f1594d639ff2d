"""engram_hash_lookup (reference): against a NumPy oracle written here (vectorised uint64 hashing, a
NumPy gather, e4m3 / UE8M0 decoding in float64) and bit-exact against the two-op composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from v4_ascend import ops
from v4_ascend.reference import engram as ref
from v4_ascend.testing import cases

V_COMP, PAD = 99_092, 2


def numpy_rows(ids, multipliers, moduli, offsets, pad_id, history):
    """All positions at once: a [B, S, N] window of look-backs, products and XORs in uint64, floor mod."""
    ids = ids.numpy()
    B, S = ids.shape
    N = multipliers.shape[0]
    past = np.full((B, N - 1), pad_id, dtype=np.int64) if history is None else history.numpy()
    seq = np.concatenate([past, ids], axis=1).view(np.uint64)
    # windows[b, s, k] = the id k positions before s
    windows = np.lib.stride_tricks.sliding_window_view(seq, N, axis=1)[:, :, ::-1]
    terms = windows * multipliers.numpy().view(np.uint64)  # wraps mod 2^64
    hashes = np.bitwise_xor.accumulate(terms, axis=-1)[..., 1:].view(np.int64)  # [B, S, N-1], orders 2..N
    rows = np.mod(hashes[..., None], moduli.numpy()) + offsets.numpy()  # [B, S, N-1, Hh]
    return rows.reshape(B, S, -1)


def decode_e4m3(codes):
    b = codes.astype(np.int64)
    exponent, mantissa = (b >> 3) & 0xF, b & 0x7
    magnitude = np.where(exponent == 0, mantissa * 2.0**-9, (8 + mantissa) * 2.0 ** (exponent - 10.0))
    return np.where((b & 0x7F) == 0x7F, np.nan, np.where(b & 0x80, -magnitude, magnitude))


def numpy_lookup(table, rows, scale, out_dtype):
    """Gathered rows (zeros for -1), dequantised in float64 (fp8 x UE8M0 is exact; fp32 scales round in fp32)."""
    safe = np.maximum(rows, 0)
    if table.dtype == torch.float8_e4m3fn:
        values = decode_e4m3(table.view(torch.uint8).numpy()[safe])
        if scale.dtype == torch.float32:
            values = values.astype(np.float32) * np.repeat(scale.numpy()[safe], 32, axis=-1)
        else:
            exponents = scale.view(torch.uint8).numpy()[safe].astype(np.float64)
            values = values * np.repeat(np.where(exponents == 255, np.nan, 2.0 ** (exponents - 127)), 32, axis=-1)
    else:
        values = table.double().numpy()[safe]
    values = np.where(rows[..., None] < 0, 0.0, values)
    return torch.from_numpy(values.reshape(*rows.shape[:-1], -1)).to(out_dtype)


def assert_identical(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def composed(ids, multipliers, moduli, offsets, pad_id, table, history=None, scale=None, out_dtype=None):
    return ref.engram_lookup(table, ref.engram_hash(ids, multipliers, moduli, offsets, pad_id, history), scale,
                             out_dtype)


def registered_cases():
    return [pytest.param(c, id=f"{c.name}-{dtype}") for dtype in cases.case_sets()["engram_hash_lookup"].dtypes
            for c in cases.generate("engram_hash_lookup", "cpu", dtype)]


@pytest.mark.parametrize("case", registered_cases())
def test_every_case_equals_the_composition_and_the_numpy_oracle(case):
    got = ref.engram_hash_lookup(*case.args, **case.kwargs)
    assert_identical(got, composed(*case.args, **case.kwargs))
    ids, multipliers, moduli, offsets, pad_id, table, *rest = case.args
    history = rest[0] if rest else None
    rows = numpy_rows(ids, multipliers, moduli, offsets, pad_id, history)
    want = numpy_lookup(table, rows, case.kwargs.get("scale"), got.dtype)
    assert_identical(got, want)


def test_v41_layer_large_ids_and_every_table_kind():
    layer = ops.engram_layout([1], 4, 8, 101, V_COMP)[0]
    args = (layer.multipliers, layer.moduli, layer.offsets, PAD)
    ids = torch.randint(2**40, 2**60, (2, 9))  # products wrap around int64, hashes of both signs
    history = torch.randint(0, V_COMP, (2, 3))
    R = layer.num_rows
    fp8 = torch.randint(0, 256, (R, 64), dtype=torch.uint8).view(torch.float8_e4m3fn)
    for table, scale in [(torch.randn(R, 16), None), (torch.randn(R, 16).to(torch.bfloat16), None),
                         (fp8, torch.randint(100, 150, (R, 2), dtype=torch.uint8)), (fp8, torch.rand(R, 2) * 10)]:
        got = ref.engram_hash_lookup(ids, *args, table, history, scale)
        assert_identical(got, composed(ids, *args, table, history, scale))
        want = numpy_lookup(table, numpy_rows(ids, *args, history), scale, got.dtype)
        assert_identical(got, want)


def test_decode_token_by_token_equals_prefill():
    layer = ops.engram_layout([1], 3, 2, 11, 50)[0]
    args = (layer.multipliers, layer.moduli, layer.offsets, 0)
    table = torch.randn(layer.num_rows, 8)
    ids = torch.randint(0, 50, (1, 6))
    prefill = ref.engram_hash_lookup(ids, *args, table)
    history = torch.zeros(1, 2, dtype=torch.int64)
    for s in range(6):
        step = ref.engram_hash_lookup(ids[:, s: s + 1], *args, table, history)
        assert torch.equal(step[0, 0], prefill[0, s])
        history = torch.cat((history[:, 1:], ids[:, s: s + 1]), dim=1)


@settings(max_examples=20, deadline=None)
@given(B=st.integers(1, 2), S=st.integers(1, 7), orders=st.integers(2, 4), heads=st.integers(1, 3),
       with_history=st.booleans(), seed=st.integers(0, 2**31))
def test_property_equals_oracle(B, S, orders, heads, with_history, seed):
    gen = torch.Generator().manual_seed(seed)
    multipliers = torch.randint(-(2**62), 2**62, (orders,), generator=gen)
    moduli = torch.randint(1, 40, (orders - 1, heads), generator=gen)
    offsets = torch.randint(-1, 21, (orders - 1, heads), generator=gen)  # rows in [-1, 60): -1 gives zeros
    ids = torch.randint(0, 2**62, (B, S), generator=gen)
    history = torch.randint(0, 2**62, (B, orders - 1), generator=gen) if with_history else None
    table = torch.randn(60, 4, generator=gen)
    got = ref.engram_hash_lookup(ids, multipliers, moduli, offsets, 3, table, history)
    want = numpy_lookup(table, numpy_rows(ids, multipliers, moduli, offsets, 3, history), None, torch.float32)
    assert_identical(got, want)


def _good_args():
    layer = ops.engram_layout([1], 2, 2, 5, 50)[0]
    return {"ids": torch.randint(0, 50, (2, 3)), "multipliers": layer.multipliers, "moduli": layer.moduli,
            "offsets": layer.offsets, "pad_id": 2, "table": torch.randn(layer.num_rows, 32),
            "history": torch.randint(0, 50, (2, 1)), "scale": None, "out_dtype": None}


BAD_ARGUMENTS = [
    (lambda a: {**a, "ids": a["ids"] - 100}, "ids"),
    (lambda a: {**a, "ids": a["ids"].int()}, "ids"),
    (lambda a: {**a, "moduli": a["moduli"] * 0}, "moduli"),
    (lambda a: {**a, "history": a["history"] - 100}, "history"),
    (lambda a: {**a, "history": a["history"][:1]}, "history"),
    (lambda a: {**a, "pad_id": -1}, "pad_id"),
    (lambda a: {**a, "offsets": a["offsets"][:, :1]}, "offsets"),
    (lambda a: {**a, "offsets": a["offsets"] + 100}, "offsets"),
    (lambda a: {**a, "offsets": a["offsets"] - 100}, "offsets"),
    (lambda a: {**a, "table": a["table"].int()}, "table"),
    (lambda a: {**a, "scale": torch.ones(a["table"].shape[0], 1)}, "scale"),
    (lambda a: {**a, "table": a["table"].to(torch.float8_e4m3fn)}, "scale"),
    (lambda a: {**a, "out_dtype": torch.int32}, "out_dtype"),
]


@pytest.mark.parametrize(("change", "arg"), BAD_ARGUMENTS)
def test_bad_arguments_name_the_fused_op_and_argument(change, arg):
    args = change(_good_args())
    with pytest.raises(ValueError, match=f"engram_hash_lookup: '{arg}'"):
        ref.engram_hash_lookup(*args.values())
    with pytest.raises(ValueError, match=f"engram_hash_lookup: '{arg}'"):
        ops.engram_hash_lookup(*args.values())
