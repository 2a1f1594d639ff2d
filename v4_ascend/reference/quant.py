"""Reference kernels of the quantisation family (``v4_math.md`` §2.4), bit-exact with V4's rules.

Conventions shared by every op here:

- Scales are returned as **fp32 powers of two** (UE8M0 values). :func:`scale_to_ue8m0` gives the UE8M0
  byte (the biased exponent, ``scale == 2 ** (byte - 127)``) and :func:`ue8m0_to_scale` goes back. The
  dequantise ops accept either form (fp32, ``uint8`` exponent bytes or ``torch.float8_e8m0fnu``).
- Quantisation is computed in fp32 whatever the input dtype, as the V4 kernels do.
- FP8 codes are ``torch.float8_e4m3fn`` (round to nearest even, the clamp to +-448 happens first).
- FP4 codes are e2m1 nibbles ``sign<<3 | magnitude_code`` packed two per ``uint8``: element ``2i`` of
  a row in the **low** nibble of byte ``i``, element ``2i+1`` in the high nibble (the
  ``torch.float4_e2m1fn_x2`` / OCP MX order). The sign of a value that rounds to zero is kept (``-0``
  is ``0x8``), as a hardware conversion does.
"""

from __future__ import annotations

import math

import torch

from v4_ascend import _validation as v

FP8_MAX = 448.0
FP8_AMAX_FLOOR = 1e-4
FP4_MAX = 6.0
FP4_AMAX_FLOOR = 6.0 * 2.0**-126
# e2m1 magnitudes by code 0..7.
FP4_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# Midpoints between neighbouring magnitudes; a value exactly on one rounds to the even code, i.e. up
# when the code below is odd (0.75, 1.75, 3.5) and down otherwise.
_FP4_MIDPOINTS = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True), (5.0, False))
SCALE_DTYPES = (torch.float32, torch.uint8, torch.float8_e8m0fnu)
FP4_DTYPES = (torch.uint8, torch.float4_e2m1fn_x2)


# ---- UE8M0 scales -------------------------------------------------------------------------------

def pow2_ceil(a: torch.Tensor) -> torch.Tensor:
    """``2 ** ceil(log2(a))`` for positive normal fp32 ``a``, by bit manipulation as V4 does.

    The biased exponent plus one when any mantissa bit is set is the UE8M0 byte of the result.
    """
    bits = a.to(torch.float32).view(torch.int32)
    exponent = (bits >> 23) & 0xFF
    biased = exponent + ((bits & 0x7FFFFF) != 0).to(torch.int32)
    return (biased << 23).view(torch.float32)


def scale_to_ue8m0(scale: torch.Tensor) -> torch.Tensor:
    """UE8M0 bytes (``uint8`` biased exponents) of fp32 power-of-two scales.

    Raises:
        ValueError: if ``scale`` is not fp32 or holds a value that is not a positive normal power of two.
    """
    v.tensor("scale_to_ue8m0", "scale", scale, dtypes=(torch.float32,))
    bits = scale.view(torch.int32)
    exponent = (bits >> 23) & 0xFF
    if scale.numel() and bool(((bits & 0x807FFFFF) != 0).logical_or(exponent == 0).logical_or(exponent == 255).any()):
        raise ValueError("scale_to_ue8m0: 'scale' must hold positive normal powers of two")
    return exponent.to(torch.uint8)


def ue8m0_to_scale(exponent: torch.Tensor) -> torch.Tensor:
    """fp32 scales ``2 ** (byte - 127)`` of UE8M0 bytes (``uint8`` or ``float8_e8m0fnu``); 255 is NaN."""
    v.tensor("ue8m0_to_scale", "exponent", exponent, dtypes=(torch.uint8, torch.float8_e8m0fnu))
    return exponent.view(torch.float8_e8m0fnu).to(torch.float32)


def _as_fp32_scale(op: str, scale: torch.Tensor) -> torch.Tensor:
    v.tensor(op, "scale", scale, dtypes=SCALE_DTYPES)
    return scale if scale.dtype == torch.float32 else ue8m0_to_scale(scale)


def dequant_dtype(op: str, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if dtype not in v.FLOAT_DTYPES:
        v.fail(op, "dtype", "a floating dtype (float32, bfloat16, float16, float64)", dtype)
    return dtype


# ---- checks shared with the fake kernels ---------------------------------------------------------

def _check_block(op: str, block: int, *, even: bool = False) -> None:
    if not isinstance(block, int) or block < 1 or (even and block % 2):
        v.fail(op, "block", "a positive even int" if even else "a positive int", block)


def check_act_quant(op: str, x: torch.Tensor, block: int, *, even: bool = False) -> tuple[int, ...]:
    """Shape of the per-block scale of ``x [..., K]``; ``K`` must be a multiple of ``block``."""
    v.tensor(op, "x", x, dtypes=v.FLOAT_DTYPES)
    _check_block(op, block, even=even)
    if x.dim() == 0 or x.shape[-1] % block:
        v.fail(op, "x", f"[..., K] with K a multiple of block={block}", f"shape {tuple(x.shape)}")
    return (*x.shape[:-1], x.shape[-1] // block)


def check_act_dequant(op: str, q: torch.Tensor, scale: torch.Tensor, q_dtypes, per_byte: int) -> int:
    """The block size implied by ``q [..., K/per_byte]`` and ``scale [..., K/block]``."""
    v.tensor(op, "q", q, dtypes=q_dtypes)
    if q.dim() == 0:
        v.fail(op, "q", "at least 1-D", "a 0-D tensor")
    v.tensor(op, "scale", scale, dtypes=SCALE_DTYPES, shape=(*q.shape[:-1], None), device=q.device)
    K, blocks = q.shape[-1] * per_byte, scale.shape[-1]
    if (blocks == 0) != (K == 0) or (blocks and K % blocks):
        v.fail(op, "scale", f"[..., K/block] with K={K} a multiple of its last dim", f"shape {tuple(scale.shape)}")
    return K // blocks if blocks else 1


def check_weight_quant(op: str, w: torch.Tensor, block: int) -> tuple[int, ...]:
    """Shape of the 2-D block scales of ``w [..., N, K]`` (edge blocks may be partial)."""
    v.tensor(op, "w", w, dtypes=v.FLOAT_DTYPES)
    _check_block(op, block)
    if w.dim() < 2:
        v.fail(op, "w", "at least 2-D [..., N, K]", f"shape {tuple(w.shape)}")
    return (*w.shape[:-2], -(-w.shape[-2] // block), -(-w.shape[-1] // block))


def check_weight_dequant(op: str, q: torch.Tensor, scale: torch.Tensor, block: int) -> None:
    v.tensor(op, "q", q, dtypes=(torch.float8_e4m3fn,))
    _check_block(op, block)
    if q.dim() < 2:
        v.fail(op, "q", "at least 2-D [..., N, K]", f"shape {tuple(q.shape)}")
    want = (*q.shape[:-2], -(-q.shape[-2] // block), -(-q.shape[-1] // block))
    v.tensor(op, "scale", scale, dtypes=SCALE_DTYPES, shape=want, device=q.device)


def check_hadamard(x: torch.Tensor) -> None:
    v.tensor("hadamard_rotate", "x", x, dtypes=v.FLOAT_DTYPES)
    n = x.shape[-1] if x.dim() else 0
    if n < 1 or n & (n - 1):
        v.fail("hadamard_rotate", "x", "[..., n] with n a power of two", f"shape {tuple(x.shape)}")


# ---- FP8 e4m3 ------------------------------------------------------------------------------------

def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    return x.to(torch.float32).unflatten(-1, (-1, block))


def fp8_quant(x, block=128):
    check_act_quant("fp8_quant", x, block)
    xb = _blocks(x, block)
    amax = xb.abs().amax(dim=-1, keepdim=True).clamp(min=FP8_AMAX_FLOOR)
    scale = pow2_ceil(amax / FP8_MAX)
    q = (xb / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q.flatten(-2), scale.squeeze(-1)


def fp8_dequant(q, scale, dtype=None):
    block = check_act_dequant("fp8_dequant", q, scale, (torch.float8_e4m3fn,), 1)
    out = dequant_dtype("fp8_dequant", dtype)
    s = _as_fp32_scale("fp8_dequant", scale)
    return (_blocks(q, block) * s[..., None]).flatten(-2).to(out)


def fp8_fake_quant(x, block=128):
    q, scale = fp8_quant(x, block)
    return fp8_dequant(q, scale, x.dtype)


# ---- FP4 e2m1 ------------------------------------------------------------------------------------

def fp4_codes(v_scaled: torch.Tensor) -> torch.Tensor:
    """e2m1 nibbles (``uint8``) of fp32 values already divided by their scale and clamped to +-6."""
    magnitude = v_scaled.abs()
    code = torch.zeros(v_scaled.shape, dtype=torch.uint8, device=v_scaled.device)
    for midpoint, tie_up in _FP4_MIDPOINTS:
        code += (magnitude >= midpoint if tie_up else magnitude > midpoint).to(torch.uint8)
    return code | (torch.signbit(v_scaled).to(torch.uint8) << 3)


def fp4_values(code: torch.Tensor) -> torch.Tensor:
    """fp32 values of e2m1 nibbles (``uint8`` in 0..15)."""
    grid = torch.tensor(FP4_GRID, dtype=torch.float32, device=code.device)
    magnitude = grid[(code & 7).long()]
    return torch.where((code & 8) != 0, -magnitude, magnitude)


def fp4_pack(code: torch.Tensor) -> torch.Tensor:
    """Nibbles ``[..., K]`` to bytes ``[..., K/2]``: element ``2i`` low, ``2i+1`` high."""
    pairs = code.unflatten(-1, (-1, 2))
    return pairs[..., 0] | (pairs[..., 1] << 4)


def fp4_unpack(packed: torch.Tensor) -> torch.Tensor:
    """Bytes ``[..., K/2]`` (``uint8`` or ``float4_e2m1fn_x2``) to nibbles ``[..., K]``."""
    b = packed.view(torch.uint8)
    return torch.stack((b & 0xF, b >> 4), dim=-1).flatten(-2)


def fp4_quant(x, block=32):
    check_act_quant("fp4_quant", x, block, even=True)
    xb = _blocks(x, block)
    amax = xb.abs().amax(dim=-1, keepdim=True).clamp(min=FP4_AMAX_FLOOR)
    scale = pow2_ceil(amax / FP4_MAX)
    code = fp4_codes((xb / scale).clamp(-FP4_MAX, FP4_MAX))
    return fp4_pack(code.flatten(-2)), scale.squeeze(-1)


def fp4_dequant(q, scale, dtype=None):
    block = check_act_dequant("fp4_dequant", q, scale, FP4_DTYPES, 2)
    out = dequant_dtype("fp4_dequant", dtype)
    s = _as_fp32_scale("fp4_dequant", scale)
    values = fp4_values(fp4_unpack(q))
    return (values.unflatten(-1, (-1, block)) * s[..., None]).flatten(-2).to(out)


def fp4_fake_quant(x, block=32):
    q, scale = fp4_quant(x, block)
    return fp4_dequant(q, scale, x.dtype)


# ---- 128x128 block-scaled FP8 weights --------------------------------------------------------------

def _weight_tiles(w: torch.Tensor, block: int) -> torch.Tensor:
    """``[..., N, K]`` zero-padded to whole blocks, as ``[..., N/b, b, K/b, b]`` fp32."""
    N, K = w.shape[-2:]
    padded = torch.nn.functional.pad(w.to(torch.float32), (0, -K % block, 0, -N % block))
    return padded.unflatten(-1, (-1, block)).unflatten(-3, (-1, block))


def _crop(tiles: torch.Tensor, N: int, K: int) -> torch.Tensor:
    return tiles.flatten(-2).flatten(-3, -2)[..., :N, :K].contiguous()


def fp8_weight_quant(w, block=128):
    check_weight_quant("fp8_weight_quant", w, block)
    tiles = _weight_tiles(w, block)
    amax = tiles.abs().amax(dim=(-3, -1), keepdim=True).clamp(min=FP8_AMAX_FLOOR)
    scale = pow2_ceil(amax / FP8_MAX)
    q = (tiles / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return _crop(q, *w.shape[-2:]), scale.squeeze(-1).squeeze(-2)


def fp8_weight_dequant(q, scale, block=128, dtype=None):
    check_weight_dequant("fp8_weight_dequant", q, scale, block)
    out = dequant_dtype("fp8_weight_dequant", dtype)
    s = _as_fp32_scale("fp8_weight_dequant", scale)
    tiles = _weight_tiles(q, block) * s[..., :, None, :, None]
    return _crop(tiles, *q.shape[-2:]).to(out)


def fp8_weight_fake_quant(w, block=128):
    q, scale = fp8_weight_quant(w, block)
    return fp8_weight_dequant(q, scale, block, w.dtype)


# ---- Hadamard rotation -----------------------------------------------------------------------------

def hadamard_rotate(x):
    # Butterflies rather than a matmul: each row's result is independent of how many rows are
    # rotated together, so prefill and decode quantise indexer keys identically.
    check_hadamard(x)
    n = x.shape[-1]
    y = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    half = 1
    while half < n:
        pairs = y.unflatten(-1, (n // (2 * half), 2, half))
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2).flatten(-3)
        half *= 2
    return (y * (1.0 / math.sqrt(n))).to(x.dtype)
