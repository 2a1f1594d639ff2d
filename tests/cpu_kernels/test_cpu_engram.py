"""C++ engram_hash and engram_lookup vs the reference: hashes bit-exact, gathered values bit-exact."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v4_ascend.ops.engram_layout import engram_layout
from v4_ascend.reference import engram as ref

INT64 = 1 << 64
FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def v41_hash_args():
    layer = engram_layout([1, 14], 4, 8, 16_000_000, 99_092)[0]
    return layer.multipliers, layer.moduli, layer.offsets


def hash_both(served_by_cpp, ids, multipliers, moduli, offsets, pad_id, history=None):
    with served_by_cpp("engram_hash"):
        got = torch.ops.v4_ascend.engram_hash(ids, multipliers, moduli, offsets, pad_id, history)
    return got, ref.engram_hash(ids, multipliers, moduli, offsets, pad_id, history)


def python_hash(ids, multipliers, moduli, offsets, pad_id, history):
    """Independent oracle in Python integers: wrap products to signed 64 bits by hand."""

    def wrap(x):
        x %= INT64
        return x - INT64 if x >= INT64 // 2 else x

    back = len(multipliers) - 1
    out = []
    for b, seq in enumerate(ids):
        window = (history[b] if history is not None else [pad_id] * back) + seq
        rows = []
        for s in range(len(seq)):
            running, columns = wrap(window[back + s] * multipliers[0]), []
            for k in range(1, back + 1):
                running = wrap(running ^ wrap(window[back + s - k] * multipliers[k]))
                columns += [running % m + o for m, o in zip(moduli[k - 1], offsets[k - 1])]
            rows.append(columns)
        out.append(rows)
    return out


@pytest.mark.parametrize(("B", "S", "with_history"), [(2, 37, False), (2, 37, True), (4, 1, True), (3, 2, False)])
def test_hash_matches_reference_on_v41_layout(served_by_cpp, B, S, with_history):
    ids = torch.randint(0, 99_092, (B, S))
    history = torch.randint(0, 99_092, (B, 3)) if with_history else None
    got, want = hash_both(served_by_cpp, ids, *v41_hash_args(), 2, history)
    assert got.dtype == torch.int64 and torch.equal(got, want)


def test_hash_wrapping_products_match_python_integers(served_by_cpp):
    ids = torch.randint(2**40, 2**50, (2, 9))
    multipliers = torch.randint(-(2**62), 2**62, (4,)) | 1
    moduli = torch.randint(1, 2**40, (3, 5))
    offsets = torch.randint(0, 2**40, (3, 5))
    history = torch.randint(2**40, 2**50, (2, 3))
    got, want = hash_both(served_by_cpp, ids, multipliers, moduli, offsets, 7, history)
    assert torch.equal(got, want)
    oracle = python_hash(ids.tolist(), multipliers.tolist(), moduli.tolist(), offsets.tolist(), 7, history.tolist())
    assert got.tolist() == oracle


def test_hash_empty_and_non_contiguous(served_by_cpp):
    args = v41_hash_args()
    got, want = hash_both(served_by_cpp, torch.zeros(2, 0, dtype=torch.int64), *args, 2)
    assert got.shape == want.shape == (2, 0, args[1].numel())
    ids = torch.randint(0, 1000, (12, 3)).t()  # [3, 12] non-contiguous: copied to contiguous by the adapter
    history = torch.randint(0, 1000, (3, 6))[:, ::2]
    got, want = hash_both(served_by_cpp, ids, *args, 2, history)
    assert torch.equal(got, want)


@pytest.mark.parametrize(("change", "arg"), [
    (lambda a: {**a, "ids": a["ids"] - 10**6}, "ids"),
    (lambda a: {**a, "moduli": a["moduli"] * 0}, "moduli"),
    (lambda a: {**a, "history": a["history"] - 10**6}, "history"),
    (lambda a: {**a, "pad_id": -1}, "pad_id"),
    (lambda a: {**a, "multipliers": a["multipliers"][:1], "moduli": a["moduli"][:0], "offsets": a["offsets"][:0],
                "history": a["history"][:, :0]}, "multipliers"),
    (lambda a: {**a, "ids": a["ids"].int()}, "ids"),
    (lambda a: {**a, "offsets": a["offsets"][:, :1]}, "offsets"),
])
def test_hash_bad_arguments_name_the_argument(served_by_cpp, change, arg):
    multipliers, moduli, offsets = v41_hash_args()
    good = {"ids": torch.randint(0, 50, (2, 5)), "multipliers": multipliers, "moduli": moduli, "offsets": offsets,
            "pad_id": 2, "history": torch.randint(0, 50, (2, 3))}
    with served_by_cpp("engram_hash", calls=0), pytest.raises(ValueError, match=f"engram_hash: '{arg}'"):
        torch.ops.v4_ascend.engram_hash(*change(good).values())


@PROPERTY
@given(B=st.integers(1, 3), S=st.integers(1, 12), orders=st.integers(2, 5), heads=st.integers(1, 4),
       with_history=st.booleans(), data=st.data())
def test_hash_property(served_by_cpp, B, S, orders, heads, with_history, data):
    seed = data.draw(st.integers(0, 2**31))
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 2**62, (B, S), generator=gen)
    multipliers = torch.randint(-(2**62), 2**62, (orders,), generator=gen)
    moduli = torch.randint(1, 2**62, (orders - 1, heads), generator=gen)
    offsets = torch.randint(-(2**62), 2**62, (orders - 1, heads), generator=gen)
    history = torch.randint(0, 2**62, (B, orders - 1), generator=gen) if with_history else None
    got, want = hash_both(served_by_cpp, ids, multipliers, moduli, offsets, 5, history)
    assert torch.equal(got, want)


def lookup_both(served_by_cpp, table, rows, scale=None, out_dtype=None, reference_table=None):
    with served_by_cpp("engram_lookup"):
        got = torch.ops.v4_ascend.engram_lookup(table, rows, scale, out_dtype)
    want = ref.engram_lookup(table if reference_table is None else reference_table, rows, scale, out_dtype)
    return got, want


def assert_identical(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def rows_with_edges(R, shape, dtype=torch.int64):
    rows = torch.randint(0, R, shape)
    rows.view(-1)[0], rows.view(-1)[1] = R - 1, -1  # the last row and a hole
    return rows.to(dtype)


@pytest.mark.parametrize("table_dtype", FLOATS)
@pytest.mark.parametrize("out_dtype", [None, *FLOATS])
def test_lookup_float_tables(served_by_cpp, table_dtype, out_dtype):
    R, E = 53, 40
    table = (torch.randn(R, E, dtype=torch.float64) * 3).to(table_dtype)
    got, want = lookup_both(served_by_cpp, table, rows_with_edges(R, (3, 5, 4)), out_dtype=out_dtype)
    assert_identical(got, want)
    assert (got[0, 0, E:2 * E] == 0).all()  # the -1 hole


@pytest.mark.parametrize("scale_kind", ["uint8", "e8m0", "fp32"])
@pytest.mark.parametrize("out_dtype", [None, *FLOATS])
def test_lookup_fp8_every_code_and_scale(served_by_cpp, scale_kind, out_dtype):
    """All 256 e4m3 codes (subnormals, NaN) times UE8M0 exponents 0..255 (255 = NaN) or fp32 scales."""
    R, E = 64, 256
    table = torch.randint(0, 256, (R, E), dtype=torch.uint8)
    table[0] = torch.arange(256, dtype=torch.uint8)
    table = table.view(torch.float8_e4m3fn)
    exponents = torch.randint(100, 150, (R, E // 32), dtype=torch.uint8)
    exponents[:32].view(-1)[:256] = torch.arange(256, dtype=torch.uint8)
    scale = {"uint8": exponents, "e8m0": exponents.view(torch.float8_e8m0fnu),
             "fp32": torch.rand(R, E // 32) * 1e3}[scale_kind]
    rows = rows_with_edges(R, (6, 32), dtype=torch.int32)
    rows[1] = torch.arange(32, dtype=torch.int32)  # row 0 holds every code, rows 0..31 every exponent
    got, want = lookup_both(served_by_cpp, table, rows, scale, out_dtype)
    assert_identical(got, want)


def test_lookup_bf16_table_vs_fp32_reference_on_same_values(served_by_cpp):
    R, E = 30, 64
    table = torch.randn(R, E).to(torch.bfloat16)
    got, want = lookup_both(served_by_cpp, table, rows_with_edges(R, (7, 3)), out_dtype=torch.float32,
                            reference_table=table.float())
    assert_identical(got, want)


def test_lookup_memory_mapped_table(served_by_cpp, tmp_path):
    R, E = 4096, 32
    values = torch.randn(R, E).to(torch.bfloat16)
    path = tmp_path / "table.bin"
    values.view(torch.uint8).numpy().tofile(path)
    mapped = torch.from_file(str(path), shared=False, size=R * E * 2, dtype=torch.uint8).view(R, 2 * E)
    table = mapped.view(torch.bfloat16)
    rows = rows_with_edges(R, (100, 2))
    got, want = lookup_both(served_by_cpp, table, rows)
    assert_identical(got, want)
    expected = torch.where(rows[..., None] >= 0, values[rows.clamp_min(0)], 0).reshape(100, 2 * E)
    assert torch.equal(got, expected)


def test_lookup_non_contiguous_inputs(served_by_cpp):
    R, E = 20, 32
    table = torch.randn(R, 2 * E)[:, ::2]
    rows = rows_with_edges(R, (6, 4)).t()
    assert not (table.is_contiguous() or rows.is_contiguous())
    got, want = lookup_both(served_by_cpp, table, rows)
    assert_identical(got, want)


@pytest.mark.parametrize(("bad_rows", "found"), [([0, -2], "-2"), ([5, 1], "5")])
def test_lookup_rows_out_of_range(served_by_cpp, bad_rows, found):
    table = torch.randn(5, 8)
    with served_by_cpp("engram_lookup", calls=0), pytest.raises(
        ValueError, match=rf"engram_lookup: 'rows' values must be in \[-1, 5\), found {found}"
    ):
        torch.ops.v4_ascend.engram_lookup(table, torch.tensor([bad_rows]))


@pytest.mark.parametrize(("table", "scale", "out_dtype", "arg"), [
    (torch.zeros(4, 32, dtype=torch.float8_e4m3fn), None, None, "scale"),
    (torch.zeros(4, 32, dtype=torch.float8_e4m3fn), torch.zeros(4, 2, dtype=torch.uint8), None, "scale"),
    (torch.zeros(4, 16, dtype=torch.float8_e4m3fn), torch.zeros(4, 1, dtype=torch.uint8), None, "table"),
    (torch.zeros(4, 32), torch.zeros(4, 1), None, "scale"),
    (torch.zeros(4, 32), None, torch.int32, "out_dtype"),
    (torch.zeros(4, 32, dtype=torch.int32), None, None, "table"),
])
def test_lookup_bad_arguments_name_the_argument(served_by_cpp, table, scale, out_dtype, arg):
    with served_by_cpp("engram_lookup", calls=0), pytest.raises(ValueError, match=f"engram_lookup: '{arg}'"):
        torch.ops.v4_ascend.engram_lookup(table, torch.tensor([[0, 1]]), scale, out_dtype)
