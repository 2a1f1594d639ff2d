"""Quantisation ops against hand-computed bit patterns and an independent NumPy formulation (§2.4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from v4_ascend import ops

# ---- independent NumPy formulation -------------------------------------------------------------------

E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def np_pow2_ceil(a: np.ndarray) -> np.ndarray:
    """2**ceil(log2(a)) through frexp (a = m * 2**e, m in [0.5, 1)): exact, no bit tricks."""
    m, e = np.frexp(a.astype(np.float64))
    return np.ldexp(1.0, np.where(m == 0.5, e - 1, e))


def np_e4m3(v: np.ndarray) -> np.ndarray:
    """Round to the e4m3 grid (3 mantissa bits, subnormal step 2**-9), ties to even, |v| <= 448."""
    mag = np.abs(v)
    exponent = np.maximum(np.floor(np.log2(np.where(mag > 0, mag, 1.0))), -6)
    step = np.ldexp(1.0, (exponent - 3).astype(int))
    return np.round(v / step) * step  # numpy rounds half to even


def np_e2m1_codes(v: np.ndarray) -> np.ndarray:
    """Nearest e2m1 magnitude; on a tie the even code; sign bit kept (also for zero)."""
    dist = np.abs(np.abs(v)[..., None] - E2M1)
    best = dist.min(axis=-1, keepdims=True)
    candidates = np.where(dist == best, np.arange(8), 99)
    even = np.where(candidates % 2 == 0, candidates, 99).min(axis=-1)
    code = np.where(even < 99, even, candidates.min(axis=-1))
    return code | (np.signbit(v).astype(int) << 3)


def np_block_quant(x: np.ndarray, block: int, qmax: float, floor: float):
    """(scaled values, scales) of per-block quantisation in float32 arithmetic, as V4 does."""
    xb = x.astype(np.float32).reshape(*x.shape[:-1], -1, block)
    amax = np.maximum(np.abs(xb).max(axis=-1), np.float32(floor))
    scale = np_pow2_ceil(amax / np.float32(qmax))
    return xb / scale[..., None], scale


def np_fp8_values(x, block):
    scaled, scale = np_block_quant(x, block, 448.0, 1e-4)
    return np_e4m3(np.clip(scaled, -448, 448)), scale


def np_fp4_codes(x, block):
    scaled, scale = np_block_quant(x, block, 6.0, 6.0 * 2.0**-126)
    return np_e2m1_codes(np.clip(scaled, -6, 6)), scale


def spread(*shape, gen=None) -> torch.Tensor:
    """Random fp32 values over many magnitudes (block amaxes from 1e-6 to 1e4)."""
    base = torch.randn(*shape, generator=gen)
    magnitude = 10.0 ** torch.empty(*shape[:-1], 1).uniform_(-6, 4, generator=gen)
    return base * magnitude


# ---- UE8M0 scales ----------------------------------------------------------------------------------

def test_pow2_ceil_hand_cases_and_ue8m0_bytes():
    a = torch.tensor([1.0, 1.5, 0.75, 3.0, 2.0**-10, 1.0 + 2.0**-23, 2.0**-126, 2.0**127])
    want = torch.tensor([1.0, 2.0, 1.0, 4.0, 2.0**-10, 2.0, 2.0**-126, 2.0**127])
    from v4_ascend.reference.quant import pow2_ceil

    s = pow2_ceil(a)
    assert torch.equal(s, want)
    assert ops.scale_to_ue8m0(s).tolist() == [127, 128, 127, 129, 117, 128, 1, 254]
    assert torch.equal(ops.ue8m0_to_scale(ops.scale_to_ue8m0(s)), s)
    # torch's own float -> e8m0 conversion is exact on powers of two: an independent check of the bytes.
    assert torch.equal(s.to(torch.float8_e8m0fnu).view(torch.uint8), ops.scale_to_ue8m0(s))


def test_ue8m0_decode_edges_and_bad_scales():
    assert ops.ue8m0_to_scale(torch.tensor([0, 127, 254], dtype=torch.uint8)).tolist() == [2.0**-127, 1.0, 2.0**127]
    assert torch.isnan(ops.ue8m0_to_scale(torch.tensor([255], dtype=torch.uint8))).all()
    for bad in (3.0, -2.0, 0.0):
        with pytest.raises(ValueError, match="'scale'"):
            ops.scale_to_ue8m0(torch.tensor([1.0, bad]))
    with pytest.raises(ValueError, match="'exponent'"):
        ops.ue8m0_to_scale(torch.tensor([1], dtype=torch.int32))


# ---- FP8 e4m3 activations ------------------------------------------------------------------------------

def test_fp8_bit_patterns_by_hand():
    # amax 448 makes the scale exactly 1, so the codes are those of the raw values.
    vals = [448.0, 1.0, -2.0, 2.0**-9, 0.0, 2.0**-10, 3 * 2.0**-10, 1.0625, 1.1875, -0.0, 240.0, 232.0]
    x = torch.tensor(vals + [0.5] * (64 - len(vals)))[None]
    q, scale = ops.fp8_quant(x, 64)
    assert scale.tolist() == [[1.0]]
    # 2**-10 ties to 0 (even), 3*2**-10 to code 2; 1.0625 ties to 1.0, 1.1875 to 1.25; 232 ties to 224.
    want = [0x7E, 0x38, 0xC0, 0x01, 0x00, 0x00, 0x02, 0x38, 0x3A, 0x80, 0x77, 0x76]
    assert q.view(torch.uint8)[0, : len(want)].tolist() == want


def test_fp8_scale_and_amax_floor():
    x = torch.zeros(3, 128)
    x[0, 5] = -1.0  # amax 1: 1/448 -> 2**-8, so -1 becomes -256 = 0xF8
    x[1, 7] = 1e-6  # below the 1e-4 floor: scale 2**-22
    q, scale = ops.fp8_quant(x, 128)
    assert scale[:, 0].tolist() == [2.0**-8, 2.0**-22, 2.0**-22]
    assert q.view(torch.uint8)[0, 5] == 0xF8
    assert q[1, 7].float() == float(np_e4m3(np.array(1e-6 * 2.0**22, dtype=np.float32)))
    assert q.view(torch.uint8)[2].eq(0).all()


@pytest.mark.parametrize("block", [128, 64])
def test_fp8_quant_matches_numpy(block):
    x = spread(6, 512)
    q, scale = ops.fp8_quant(x, block)
    want_q, want_scale = np_fp8_values(x.numpy(), block)
    assert np.array_equal(scale.numpy(), want_scale)
    assert np.array_equal(q.float().numpy().reshape(want_q.shape), want_q)
    assert np.array_equal(torch.signbit(q.float()).numpy().reshape(want_q.shape), np.signbit(want_q))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_fp8_round_trip_and_fake_quant(dtype):
    x = spread(4, 256).clamp(-6e4, 6e4).to(dtype)
    q, scale = ops.fp8_quant(x, 128)
    fake = ops.fp8_fake_quant(x, 128)
    assert fake.dtype == dtype
    exact = ops.fp8_dequant(q, scale)
    assert torch.equal(fake, exact.to(dtype))
    assert torch.equal(ops.fp8_dequant(q, ops.scale_to_ue8m0(scale)), exact)
    assert torch.equal(ops.fp8_dequant(q, scale.to(torch.float8_e8m0fnu)), exact)
    assert torch.equal(ops.fp8_fake_quant(fake, 128), fake)  # idempotent
    # e4m3 keeps 3 mantissa bits: relative error at most 2**-4 (above the subnormal range).
    big = exact.abs() >= scale.repeat_interleave(128, dim=-1) * 2.0**-6
    assert ((exact - x.float()).abs() <= 2.0**-4 * x.float().abs())[big].all()


def test_fp8_errors_name_the_argument():
    with pytest.raises(ValueError, match="'x'"):
        ops.fp8_quant(torch.randn(2, 100), 128)
    with pytest.raises(ValueError, match="'block'"):
        ops.fp8_quant(torch.randn(2, 128), 0)
    with pytest.raises(ValueError, match="'x'"):
        ops.fp8_quant(torch.randint(0, 5, (2, 128)), 128)
    q, scale = ops.fp8_quant(torch.randn(2, 128), 64)
    with pytest.raises(ValueError, match="'q'"):
        ops.fp8_dequant(q.float(), scale)
    with pytest.raises(ValueError, match="'scale'"):
        ops.fp8_dequant(q, scale[:, :1].expand(2, 3).contiguous())
    with pytest.raises(ValueError, match="'scale'"):
        ops.fp8_dequant(q, scale.double())
    with pytest.raises(ValueError, match="'dtype'"):
        ops.fp8_dequant(q, scale, torch.int32)


# ---- FP4 e2m1 ----------------------------------------------------------------------------------------

def test_fp4_ties_round_to_even_and_packing_order():
    # amax 6 gives scale 1; every midpoint between grid values, then just above it, then negatives.
    ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0]
    above = [t + 1e-3 for t in ties[:-1]] + [0.1]
    negative = [-0.75, -3.5, -0.1, -0.0, 0.0, -6.0, 4.0, 0.5]
    x = torch.tensor([ties + above + negative + [1.0] * 8])
    q, scale = ops.fp4_quant(x, 32)
    assert scale.tolist() == [[1.0]]
    nibbles = torch.stack((q & 0xF, q >> 4), -1).flatten().tolist()
    assert nibbles[:8] == [0, 2, 2, 4, 4, 6, 6, 7]  # 0.25->0, .75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4
    assert nibbles[8:16] == [1, 2, 3, 4, 5, 6, 7, 0]  # just above each tie rounds up
    assert nibbles[16:24] == [0xA, 0xE, 0x8, 0x8, 0x0, 0xF, 0x6, 0x1]  # sign kept, also on zeros
    # element 2i in the low nibble: [0.25, 0.75] -> 0x20, [1.25, 1.75] -> 0x42
    assert q[0, :4].tolist() == [0x20, 0x42, 0x64, 0x76]


def test_fp4_scale_and_amax_floor():
    # The floor keeps amax/6 a normal float; any lower floor would give the same 2**-126 through the
    # exponent rule, but none at all gives a zero scale (and NaN codes) for an all-zero block.
    x = torch.zeros(3, 32)
    x[0, 0] = 7.0  # 7/6 -> scale 2, 7/2 = 3.5 ties to 4 (code 6)
    x[1, 1] = 2.0**-127  # subnormal, below the floor 6*2**-126: scale 2**-126, value 0.5 (code 1)
    q, scale = ops.fp4_quant(x, 32)
    assert scale[:, 0].tolist() == [2.0, 2.0**-126, 2.0**-126]
    assert (q[0, 0] & 0xF) == 6 and (q[1, 0] >> 4) == 1 and q[2].eq(0).all()
    assert ops.fp4_dequant(q, scale)[0, 0] == 8.0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), block=st.sampled_from([32, 16, 64]))
def test_fp4_quant_matches_numpy(seed, block):
    x = spread(3, 128, gen=torch.Generator().manual_seed(seed))
    x[0, :4] = torch.tensor([0.25, 0.75, 2.5, 3.5]) * x[0, :block].abs().max() / 6  # likely ties
    q, scale = ops.fp4_quant(x, block)
    codes, want_scale = np_fp4_codes(x.numpy(), block)
    assert np.array_equal(scale.numpy(), want_scale)
    nibbles = torch.stack((q & 0xF, q >> 4), -1).flatten(-2)
    assert np.array_equal(nibbles.numpy(), codes.reshape(3, 128))
    want = np.where(codes & 8, -1.0, 1.0) * E2M1[codes & 7] * want_scale[..., None]
    assert np.array_equal(ops.fp4_dequant(q, scale).numpy(), want.reshape(3, 128).astype(np.float32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fp4_round_trip_and_fake_quant(dtype):
    x = spread(4, 256).to(dtype)
    q, scale = ops.fp4_quant(x, 32)
    assert q.dtype == torch.uint8 and q.shape == (4, 128) and scale.shape == (4, 8)
    fake = ops.fp4_fake_quant(x, 32)
    exact = ops.fp4_dequant(q, scale)
    assert torch.equal(fake, exact.to(dtype))
    assert torch.equal(ops.fp4_dequant(q.view(torch.float4_e2m1fn_x2), ops.scale_to_ue8m0(scale)), exact)
    assert torch.equal(ops.fp4_fake_quant(fake, 32), fake)  # idempotent


def test_fp4_errors_name_the_argument():
    with pytest.raises(ValueError, match="'block'"):
        ops.fp4_quant(torch.randn(2, 33), 33)
    with pytest.raises(ValueError, match="'x'"):
        ops.fp4_quant(torch.randn(2, 48), 32)
    q, scale = ops.fp4_quant(torch.randn(2, 64), 32)
    with pytest.raises(ValueError, match="'q'"):
        ops.fp4_dequant(q.to(torch.int32), scale)
    with pytest.raises(ValueError, match="'scale'"):
        ops.fp4_dequant(q, scale[:1])


# ---- 128x128 block-scaled FP8 weights --------------------------------------------------------------

def test_fp8_weight_quant_matches_per_tile_numpy():
    w = spread(2, 200, 300)
    w[0, :128, :128] = 0.0  # an all-zero tile: floor 1e-4 -> scale 2**-22
    q, scale = ops.fp8_weight_quant(w, 128)
    assert q.shape == w.shape and scale.shape == (2, 2, 3)
    deq = ops.fp8_weight_dequant(q, scale, 128)
    wn = w.numpy()
    for e in range(2):
        for i in range(2):
            for j in range(3):
                tile = wn[e, i * 128:(i + 1) * 128, j * 128:(j + 1) * 128].astype(np.float32)
                amax = np.maximum(np.abs(tile).max(), np.float32(1e-4))
                s = np_pow2_ceil(np.array(amax / np.float32(448.0)))
                assert scale[e, i, j].item() == s
                want = np_e4m3(np.clip(tile / np.float32(s), -448, 448)) * s
                assert np.array_equal(deq[e, i * 128:(i + 1) * 128, j * 128:(j + 1) * 128].numpy(), want)
    assert scale[0, 0, 0].item() == 2.0**-22
    assert torch.equal(ops.fp8_weight_dequant(q, ops.scale_to_ue8m0(scale), 128), deq)
    assert torch.equal(ops.fp8_weight_fake_quant(w.bfloat16(), 128),
                       ops.fp8_weight_dequant(*ops.fp8_weight_quant(w.bfloat16(), 128), 128, torch.bfloat16))


def test_fp8_weight_errors_name_the_argument():
    with pytest.raises(ValueError, match="'w'"):
        ops.fp8_weight_quant(torch.randn(128), 128)
    q, scale = ops.fp8_weight_quant(torch.randn(256, 256), 128)
    with pytest.raises(ValueError, match="'scale'"):
        ops.fp8_weight_dequant(q, scale[:1], 128)
    with pytest.raises(ValueError, match="'q'"):
        ops.fp8_weight_dequant(q.float(), scale, 128)


# ---- Hadamard rotation -----------------------------------------------------------------------------

def test_hadamard_is_sylvester_orthonormal():
    n = 128
    x = torch.randn(5, 3, n, dtype=torch.float64)
    y = ops.hadamard_rotate(x)
    popcount = np.vectorize(lambda v: bin(v).count("1"))
    i = np.arange(n)
    h = (-1.0) ** popcount(i[:, None] & i[None, :]) / math.sqrt(n)
    assert np.allclose(y.numpy(), x.numpy() @ h, atol=1e-12, rtol=0)
    assert torch.allclose(ops.hadamard_rotate(y), x, atol=1e-12, rtol=0)  # H/sqrt(n) is its own inverse
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-12, rtol=0)


def test_hadamard_bf16_and_grad():
    x = torch.randn(4, 128, dtype=torch.bfloat16)
    y = ops.hadamard_rotate(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, ops.hadamard_rotate(x.float()).bfloat16())
    xd = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.hadamard_rotate, (xd,))
    with pytest.raises(ValueError, match="'x'"):
        ops.hadamard_rotate(torch.randn(2, 96))
