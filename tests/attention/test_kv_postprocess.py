"""FP8/FP4 fake-quant and the Hadamard rotation against explicit value grids and matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from v4_ascend.layers.kv_postprocess import fp8_fake_quant_nope
from v4_ascend.ops import fp4_fake_quant, fp8_fake_quant, hadamard_rotate


def _e4m3_grid():
    """(value, mantissa is even) of every finite non-negative e4m3fn number (max 448)."""
    grid = [(m / 8 * 2.0**-6, m % 2 == 0) for m in range(8)]
    grid += [((1 + m / 8) * 2.0 ** (e - 7), m % 2 == 0) for e in range(1, 16) for m in range(8) if (e, m) != (15, 7)]
    return grid


E2M1_GRID = [(0.0, True), (0.5, False), (1.0, True), (1.5, False), (2.0, True), (3.0, False), (4.0, True),
             (6.0, False)]


def round_to_grid(value, grid):
    """Nearest grid value; an exact tie goes to the even mantissa."""
    mag = abs(value)
    best = min(grid, key=lambda g: (abs(g[0] - mag), not g[1]))
    return math.copysign(best[0], value)


def oracle_fake_quant(x, block, fmt_max, amax_floor, grid):
    out = np.empty_like(x, dtype=np.float64)
    for row in range(x.shape[0]):
        for b in range(x.shape[1] // block):
            chunk = x[row, b * block:(b + 1) * block].astype(np.float64)
            amax = np.float32(max(np.abs(chunk).max(), amax_floor))
            scale = 2.0 ** math.ceil(math.log2(float(amax / np.float32(fmt_max))))
            out[row, b * block:(b + 1) * block] = [
                round_to_grid(min(max(v / scale, -fmt_max), fmt_max), grid) * scale for v in chunk
            ]
    return torch.from_numpy(out)


def _inputs(rows, width, block):
    x = torch.randn(rows, width) * torch.logspace(-6, 3, rows)[:, None]
    x[0, :block] = 0.0  # all-zero block: the amax floor applies
    x[1, :4] = torch.tensor([448.0, 0.25, 0.75, -2.5]) * 2.0**-3  # power-of-two amax and ties
    return x


def test_fp8_matches_the_e4m3_grid():
    x = _inputs(12, 128, 64)
    got = fp8_fake_quant(x, 64)
    want = oracle_fake_quant(x.numpy(), 64, 448.0, 1e-4, _e4m3_grid())
    assert torch.equal(got.double(), want)


def test_fp4_matches_the_e2m1_grid_with_ties_to_even():
    x = _inputs(12, 64, 32)
    x[2, :8] = torch.tensor([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])  # scale 1: every tie of the grid
    got = fp4_fake_quant(x, 32)
    want = oracle_fake_quant(x.numpy(), 32, 6.0, 6 * 2.0**-126, E2M1_GRID)
    assert torch.equal(got.double(), want)
    assert got[2, :8].tolist() == [6.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]


def test_fp8_nope_keeps_the_rope_tail_and_dtype():
    x = torch.randn(3, 2, 576, dtype=torch.bfloat16)
    got = fp8_fake_quant_nope(x, 64)
    assert got.dtype == torch.bfloat16 and torch.equal(got[..., 512:], x[..., 512:])
    assert torch.equal(got[..., :512], fp8_fake_quant(x[..., :512], 64))
    with pytest.raises(ValueError, match="multiple of"):
        fp8_fake_quant_nope(torch.randn(2, 100), 64)


@pytest.mark.parametrize("n", [2, 32, 128])
def test_hadamard_is_the_orthonormal_sylvester_matrix(n):
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < n:
        H = torch.cat((torch.cat((H, H), 1), torch.cat((H, -H), 1)), 0)
    x = torch.randn(5, 3, n, dtype=torch.float64)
    torch.testing.assert_close(hadamard_rotate(x), x @ H / math.sqrt(n), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(hadamard_rotate(hadamard_rotate(x)), x, atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="power of two"):
        hadamard_rotate(torch.randn(2, 3 * n))


def test_hadamard_rows_do_not_depend_on_the_batch():
    """Prefill (many rows) and decode (one row) must quantise indexer keys identically."""
    x = torch.randn(37, 128)
    alone = torch.cat([hadamard_rotate(row[None]) for row in x])
    assert torch.equal(hadamard_rotate(x), alone)
