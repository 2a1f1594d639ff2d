"""C++ engram_hash_lookup vs the reference: bit-exact for every registered case and table kind, the
call counter proves the fused kernel ran (and neither engram_hash nor engram_lookup did), errors name the
argument, non-contiguous inputs are copied (documented in the adapter), a memory-mapped table is read in place.
Moduli up to 2^62 (the reciprocal modulo's hard cases) are covered by the engram_hash kernel tests, which use
the same hashing helper."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v4_ascend import backends
from v4_ascend.ops.engram_layout import engram_layout
from v4_ascend.reference import engram as ref
from v4_ascend.testing import cases

OP = "engram_hash_lookup"
PROPERTY = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_both(served_by_cpp, *args, **kwargs):
    calls = backends.module("cpu").extension().kernel_calls()
    parts = calls["engram_hash"], calls["engram_lookup"]
    with served_by_cpp(OP):
        got = torch.ops.v4_ascend.engram_hash_lookup(*args, **kwargs)
    calls = backends.module("cpu").extension().kernel_calls()
    assert (calls["engram_hash"], calls["engram_lookup"]) == parts, "the fused kernel must not call its parts"
    return got, ref.engram_hash_lookup(*args, **kwargs)


def assert_identical(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", cases.case_sets()[OP].dtypes)
def test_every_registered_case_is_bit_exact(served_by_cpp, dtype):
    for case in cases.generate(OP, "cpu", dtype):
        got, want = run_both(served_by_cpp, *case.args, **case.kwargs)
        assert_identical(got, want)


def v41_small():
    return engram_layout([1], 4, 8, 53, 99_092)[0]


@pytest.mark.parametrize("table_dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("out_dtype", [None, torch.float32, torch.bfloat16])
def test_float_tables_many_tokens_across_threads_and_prefetch(served_by_cpp, table_dtype, out_dtype):
    layer = v41_small()
    table = (torch.randn(layer.num_rows, 48, dtype=torch.float64) * 3).to(table_dtype)
    ids = torch.randint(0, 99_092, (3, 45))
    ids[1, :4] = 2  # pad ids
    history = torch.randint(0, 99_092, (3, 3))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # several tasks: chunk starts inside a sequence re-hash their look-backs
    try:
        got, want = run_both(served_by_cpp, ids, layer.multipliers, layer.moduli, layer.offsets, 2, table, history,
                             out_dtype=out_dtype)
    finally:
        torch.set_num_threads(threads)
    assert_identical(got, want)


@pytest.mark.parametrize("scale_kind", ["uint8", "e8m0", "fp32"])
@pytest.mark.parametrize("out_dtype", [None, torch.float32, torch.float16, torch.float64])
def test_fp8_tables_every_code(served_by_cpp, scale_kind, out_dtype):
    layer = v41_small()
    R = layer.num_rows
    codes = torch.randint(0, 256, (R, 256), dtype=torch.uint8)
    codes[:, :256] = torch.arange(256, dtype=torch.uint8)[torch.randperm(256)]  # every code in every row
    exponents = torch.randint(0, 256, (R, 8), dtype=torch.uint8)  # 255 = NaN scales included
    scale = {"uint8": exponents, "e8m0": exponents.view(torch.float8_e8m0fnu), "fp32": torch.rand(R, 8) * 1e3}
    ids = torch.randint(0, 99_092, (2, 9))
    got, want = run_both(served_by_cpp, ids, layer.multipliers, layer.moduli, layer.offsets, 2,
                         codes.view(torch.float8_e4m3fn), scale=scale[scale_kind], out_dtype=out_dtype)
    assert_identical(got, want)


@PROPERTY
@given(B=st.integers(1, 3), S=st.integers(1, 40), orders=st.integers(2, 5), heads=st.integers(1, 4),
       with_history=st.booleans(), seed=st.integers(0, 2**31))
def test_property_wrapping_hashes_and_minus_one_rows(served_by_cpp, B, S, orders, heads, with_history, seed):
    gen = torch.Generator().manual_seed(seed)
    multipliers = torch.randint(-(2**62), 2**62, (orders,), generator=gen)
    moduli = torch.randint(1, 2**62, (orders - 1, heads), generator=gen) % 50 + 1  # any size, then small
    offsets = torch.randint(-1, 30, (orders - 1, heads), generator=gen)  # rows in [-1, 80)
    ids = torch.randint(0, 2**62, (B, S), generator=gen)
    history = torch.randint(0, 2**62, (B, orders - 1), generator=gen) if with_history else None
    table = torch.randn(80, 5, generator=gen)
    got, want = run_both(served_by_cpp, ids, multipliers, moduli, offsets, 3, table, history)
    assert_identical(got, want)


def test_empty_and_non_contiguous(served_by_cpp):
    layer = v41_small()
    args = (layer.multipliers, layer.moduli, layer.offsets, 2)
    table = torch.randn(layer.num_rows, 16)
    got, want = run_both(served_by_cpp, torch.zeros(2, 0, dtype=torch.int64), *args, table)
    assert got.shape == want.shape == (2, 0, 24 * 16)
    ids = torch.randint(0, 1000, (12, 3)).t()  # [3, 12] non-contiguous ids, history and table: copied
    history = torch.randint(0, 1000, (3, 6))[:, ::2]
    wide = torch.randn(layer.num_rows, 32)[:, ::2]
    assert not (ids.is_contiguous() or history.is_contiguous() or wide.is_contiguous())
    got, want = run_both(served_by_cpp, ids, *args, wide, history)
    assert_identical(got, want)


def test_memory_mapped_table(served_by_cpp, tmp_path):
    layer = v41_small()
    R, E = layer.num_rows, 32
    values = torch.randn(R, E).to(torch.bfloat16)
    path = tmp_path / "table.bin"
    values.view(torch.uint8).numpy().tofile(path)
    table = torch.from_file(str(path), shared=False, size=R * E * 2, dtype=torch.uint8).view(R, 2 * E)
    table = table.view(torch.bfloat16)
    ids = torch.randint(0, 99_092, (2, 20))
    got, want = run_both(served_by_cpp, ids, layer.multipliers, layer.moduli, layer.offsets, 2, table)
    assert_identical(got, want)
    assert_identical(got, ref.engram_hash_lookup(ids, layer.multipliers, layer.moduli, layer.offsets, 2, values))


def good_args():
    layer = engram_layout([1], 2, 2, 5, 50)[0]
    return {"ids": torch.randint(0, 50, (2, 3)), "multipliers": layer.multipliers, "moduli": layer.moduli,
            "offsets": layer.offsets, "pad_id": 2, "table": torch.randn(layer.num_rows, 32),
            "history": torch.randint(0, 50, (2, 1)), "scale": None, "out_dtype": None}


@pytest.mark.parametrize(("change", "arg"), [
    (lambda a: {**a, "ids": a["ids"] - 100}, "ids"),
    (lambda a: {**a, "ids": a["ids"].int()}, "ids"),
    (lambda a: {**a, "multipliers": a["multipliers"][:1], "moduli": a["moduli"][:0],
                "offsets": a["offsets"][:0], "history": a["history"][:, :0]}, "multipliers"),
    (lambda a: {**a, "moduli": a["moduli"] * 0}, "moduli"),
    (lambda a: {**a, "history": a["history"] - 100}, "history"),
    (lambda a: {**a, "history": a["history"][:1]}, "history"),
    (lambda a: {**a, "pad_id": -1}, "pad_id"),
    (lambda a: {**a, "offsets": a["offsets"][:, :1]}, "offsets"),
    (lambda a: {**a, "table": a["table"].int()}, "table"),
    (lambda a: {**a, "table": a["table"][:, :16].to(torch.float8_e4m3fn),
                "scale": torch.ones(a["table"].shape[0], 1)}, "table"),
    (lambda a: {**a, "scale": torch.ones(a["table"].shape[0], 1)}, "scale"),
    (lambda a: {**a, "table": a["table"].to(torch.float8_e4m3fn)}, "scale"),
    (lambda a: {**a, "table": a["table"].to(torch.float8_e4m3fn), "scale": torch.ones(3, 1)}, "scale"),
    (lambda a: {**a, "out_dtype": torch.int32}, "out_dtype"),
])
def test_bad_arguments_name_the_argument(served_by_cpp, change, arg):
    with served_by_cpp(OP, calls=0), pytest.raises(ValueError, match=f"{OP}: '{arg}'"):
        torch.ops.v4_ascend.engram_hash_lookup(*change(good_args()).values())


@pytest.mark.parametrize("shift", [100, -100])
def test_rows_outside_the_table_report_what_the_reference_reports(served_by_cpp, shift):
    args = good_args()
    args["offsets"] = args["offsets"] + shift
    with pytest.raises(ValueError) as expected:
        ref.engram_hash_lookup(*args.values())
    with served_by_cpp(OP, calls=0), pytest.raises(ValueError) as got:
        torch.ops.v4_ascend.engram_hash_lookup(*args.values())
    assert str(got.value) == str(expected.value) and f"{OP}: 'offsets'" in str(got.value)
