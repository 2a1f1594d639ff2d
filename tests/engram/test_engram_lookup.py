"""engram_lookup: gathers against plain indexing, FP8 dequantisation against an e4m3/UE8M0 decoder
written here in NumPy, and a memory-mapped sparse table file larger than the machine's RAM."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from v4_ascend import ops


def decode_e4m3(codes: np.ndarray) -> np.ndarray:
    """OCP FP8 e4m3fn bytes -> float64: bias 7, subnormals at exponent 0, S.1111.111 = NaN, no inf."""
    b = codes.astype(np.int64)
    sign = np.where(b & 0x80, -1.0, 1.0)
    exponent, mantissa = (b >> 3) & 0xF, b & 0x7
    magnitude = np.where(
        exponent == 0, mantissa / 8.0 * 2.0**-6, (1.0 + mantissa / 8.0) * 2.0 ** (exponent - 7).astype(np.float64)
    )
    return np.where((b & 0x7F) == 0x7F, np.nan, sign * magnitude)


def decode_ue8m0(codes: np.ndarray) -> np.ndarray:
    return np.where(codes == 255, np.nan, 2.0 ** (codes.astype(np.float64) - 127))


def oracle(table_bytes: np.ndarray, scale: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float64 dequantised rows, concatenated per position; ``scale`` uint8 (UE8M0) or float32."""
    values = decode_e4m3(table_bytes[rows])  # [..., cols, E]
    scales = decode_ue8m0(scale[rows]) if scale.dtype == np.uint8 else scale[rows].astype(np.float32)
    if scale.dtype == np.float32:  # fp32 block scales: the product is rounded in fp32
        out = values.astype(np.float32) * np.repeat(scales, 32, axis=-1)
    else:  # a power of two times an e4m3 value is exact
        out = values * np.repeat(scales, 32, axis=-1)
    return out.reshape(*rows.shape[:-1], -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_float_table_gathers_rows(dtype):
    table = torch.randn(50, 16).to(dtype)
    rows = torch.randint(0, 50, (3, 4, 5))
    rows[0, 0, 0] = -1
    out = ops.engram_lookup(table, rows)
    assert out.dtype == dtype and out.shape == (3, 4, 80)
    expected = table[rows.clamp_min(0)]
    expected[0, 0, 0] = 0
    torch.testing.assert_close(out, expected.reshape(3, 4, 80), atol=0, rtol=0)
    torch.testing.assert_close(ops.engram_lookup(table, rows.int(), out_dtype=torch.float64),
                               expected.reshape(3, 4, 80).double(), atol=0, rtol=0)


def test_every_fp8_code_and_scale_exponent_dequantises_exactly():
    codes = np.arange(256, dtype=np.uint8)
    table_bytes = np.tile(codes, (4, 1))  # [4, 256]: every code in every row
    # Exponents from 0 (2^-127) to 254 (2^127), and 255 (NaN).
    scale = np.array([[0, 1, 60, 127, 130, 200, 254, 255], [127] * 8, [3] * 8, [250] * 8], dtype=np.uint8)
    table = torch.from_numpy(table_bytes).view(torch.float8_e4m3fn)
    rows = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    out = ops.engram_lookup(table, torch.from_numpy(rows), torch.from_numpy(scale), torch.float32)
    expected = oracle(table_bytes, scale, rows)
    # float32 holds every value exactly (or overflows to inf where the oracle does too).
    with np.errstate(over="ignore"):
        expected32 = expected.astype(np.float32)
    torch.testing.assert_close(out, torch.from_numpy(expected32), atol=0, rtol=0, equal_nan=True)


@pytest.mark.parametrize("scale_kind", ["ue8m0", "e8m0-dtype", "fp32"])
def test_fp8_table_matches_independent_dequant(scale_kind):
    R, E = 40, 256
    table_bytes = np.random.default_rng(int(torch.randint(0, 2**31, ()))).integers(0, 256, (R, E), dtype=np.uint8)
    table_bytes[(table_bytes & 0x7F) == 0x7F] = 0x10  # no NaN codes here
    if scale_kind == "fp32":
        scale_np = (torch.rand(R, E // 32) * 3 + 0.01).numpy()
        scale = torch.from_numpy(scale_np)
    else:
        scale_np = torch.randint(110, 140, (R, E // 32), dtype=torch.uint8).numpy()
        scale = torch.from_numpy(scale_np)
        if scale_kind == "e8m0-dtype":
            scale = scale.view(torch.float8_e8m0fnu)
    rows = np.random.default_rng(0).integers(0, R, (2, 3, 24))
    table = torch.from_numpy(table_bytes).view(torch.float8_e4m3fn)
    expected = torch.from_numpy(oracle(table_bytes, scale_np, rows))
    out32 = ops.engram_lookup(table, torch.from_numpy(rows), scale, torch.float32)
    torch.testing.assert_close(out32, expected.float(), atol=0, rtol=0)
    default = ops.engram_lookup(table, torch.from_numpy(rows), scale)
    assert default.dtype == torch.bfloat16 and default.shape == (2, 3, 24 * E)
    torch.testing.assert_close(default, expected.float().bfloat16(), atol=0, rtol=0)


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def test_memory_mapped_table_larger_than_ram(tmp_path):
    """A sparse file the size of the V4.1 layer-1 table (or of RAM and more): only looked-up rows are read."""
    layout = ops.engram_layout([1, 14], 4, 8, 16_000_000, 99_092)[0]
    E, blocks = 256, 8
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    R = max(layout.num_rows, ram // E + 1)
    table_path, scale_path = tmp_path / "table.fp8", tmp_path / "scale.ue8m0"
    try:
        for path, size in ((table_path, R * E), (scale_path, R * blocks)):
            with open(path, "wb") as f:
                f.truncate(size)
    except OSError as error:
        pytest.skip(f"this filesystem cannot hold a sparse file of {R * E} bytes: {error}")

    ids = torch.randint(0, 99_092, (2, 16))
    rows = ops.engram_hash(ids, layout.multipliers, layout.moduli, layout.offsets, 2)
    rows[0, 0, 0] = R - 1  # the last row of the file
    rows[1, 0, 0] = -1  # no row
    written = sorted(set(rows.flatten().tolist()) - {-1, R - 1, rows[0, 1, 5].item()})
    gen = np.random.default_rng(int(torch.randint(0, 2**31, ())))
    row_bytes = gen.integers(0, 0x7F, (len(written), E), dtype=np.uint8)  # positive, no NaN codes
    row_bytes[:, ::2] |= 0x80  # and negative values
    row_scales = gen.integers(100, 150, (len(written), blocks), dtype=np.uint8)
    with open(table_path, "r+b") as t, open(scale_path, "r+b") as s:
        for r, data, sc in zip(written, row_bytes, row_scales):
            os.pwrite(t.fileno(), data.tobytes(), r * E)
            os.pwrite(s.fileno(), sc.tobytes(), r * blocks)
    assert os.stat(table_path).st_size > ram
    assert os.stat(table_path).st_blocks * 512 < 64 * 2**20, "the table file must stay sparse"

    table = torch.from_file(str(table_path), shared=True, size=R * E, dtype=torch.uint8).view(R, E)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memmap: torch warns it is not writable
        scale = torch.from_numpy(np.memmap(scale_path, dtype=np.uint8, mode="r", shape=(R, blocks)))
    before = _resident_bytes()
    out = ops.engram_lookup(table.view(torch.float8_e4m3fn), rows, scale)
    after = _resident_bytes()
    if before is not None:
        assert after - before < 64 * 2**20, "the lookup must not load the table"

    # Independent expectation from the bytes written (unwritten rows read as zero bytes -> 0.0).
    by_row = {r: (data, sc) for r, data, sc in zip(written, row_bytes, row_scales)}
    expected = np.zeros((2, 16, 24, E))
    for index in np.ndindex(2, 16, 24):
        r = rows[index].item()
        if r in by_row:
            data, sc = by_row[r]
            expected[index] = oracle(data[None], sc[None], np.array([[0]]))[0]
    assert out.dtype == torch.bfloat16 and out.shape == (2, 16, 24 * E)
    torch.testing.assert_close(out, torch.from_numpy(expected).reshape(2, 16, -1).float().bfloat16(), atol=0, rtol=0)
    assert out[0, 1, 5 * E : 6 * E].abs().sum() == 0 and out[1, 0, :E].abs().sum() == 0


def _bad(name):
    table = torch.randn(10, 64)
    fp8 = table.to(torch.float8_e4m3fn)
    scale = torch.full((10, 2), 127, dtype=torch.uint8)
    rows = torch.randint(0, 10, (2, 3))
    return {
        "table-rank": (lambda: ops.engram_lookup(table[0], rows), "'table'"),
        "table-int": (lambda: ops.engram_lookup(table.long(), rows), "'table'"),
        "rows-float": (lambda: ops.engram_lookup(table, rows.float()), "'rows'"),
        "rows-range": (lambda: ops.engram_lookup(table, rows + 10), "'rows'"),
        "rows-below": (lambda: ops.engram_lookup(table, rows - 20), "'rows'"),
        "fp8-no-scale": (lambda: ops.engram_lookup(fp8, rows), "'scale'"),
        "fp8-scale-shape": (lambda: ops.engram_lookup(fp8, rows, scale[:, :1]), "'scale'"),
        "fp8-scale-dtype": (lambda: ops.engram_lookup(fp8, rows, scale.half()), "'scale'"),
        "fp8-width": (lambda: ops.engram_lookup(fp8[:, :48], rows, scale[:, :1]), "'table'"),
        "float-with-scale": (lambda: ops.engram_lookup(table, rows, scale), "'scale'"),
        "out-dtype": (lambda: ops.engram_lookup(table, rows, None, torch.int32), "'out_dtype'"),
    }[name]


@pytest.mark.parametrize("name", [
    "table-rank", "table-int", "rows-float", "rows-range", "rows-below", "fp8-no-scale", "fp8-scale-shape",
    "fp8-scale-dtype", "fp8-width", "float-with-scale", "out-dtype",
])
def test_bad_input_names_the_argument(name):
    call, arg = _bad(name)
    with pytest.raises(ValueError, match=arg):
        call()
