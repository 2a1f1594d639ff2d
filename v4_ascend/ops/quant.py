"""Quantisation family declarations: FP8 e4m3 / FP4 e2m1 with UE8M0 scales, and the Hadamard rotation.

All quantisers follow ``v4_math.md`` §2.4 bit for bit. Scales come back as fp32 powers of two; use
:func:`scale_to_ue8m0` / :func:`ue8m0_to_scale` for the one-byte UE8M0 form, which every dequantiser
also accepts (``uint8`` exponent bytes or ``torch.float8_e8m0fnu``).
"""

from __future__ import annotations

import torch

from v4_ascend import library
from v4_ascend.reference import quant as ref
from v4_ascend.reference.quant import scale_to_ue8m0, ue8m0_to_scale

__all__ = [
    "fp4_dequant", "fp4_fake_quant", "fp4_quant", "fp8_dequant", "fp8_fake_quant", "fp8_quant",
    "fp8_weight_dequant", "fp8_weight_fake_quant", "fp8_weight_quant", "hadamard_rotate",
    "scale_to_ue8m0", "ue8m0_to_scale",
]


def _fp8_quant_fake(x, block=128):
    scale_shape = ref.check_act_quant("fp8_quant", x, block)
    return x.new_empty(x.shape, dtype=torch.float8_e4m3fn), x.new_empty(scale_shape, dtype=torch.float32)


def _fp8_dequant_fake(q, scale, dtype=None):
    ref.check_act_dequant("fp8_dequant", q, scale, (torch.float8_e4m3fn,), 1)
    return q.new_empty(q.shape, dtype=ref.dequant_dtype("fp8_dequant", dtype))


def _fp8_fake_quant_fake(x, block=128):
    ref.check_act_quant("fp8_fake_quant", x, block)
    return torch.empty_like(x)


def _fp4_quant_fake(x, block=32):
    scale_shape = ref.check_act_quant("fp4_quant", x, block, even=True)
    packed = (*x.shape[:-1], x.shape[-1] // 2)
    return x.new_empty(packed, dtype=torch.uint8), x.new_empty(scale_shape, dtype=torch.float32)


def _fp4_dequant_fake(q, scale, dtype=None):
    ref.check_act_dequant("fp4_dequant", q, scale, ref.FP4_DTYPES, 2)
    return q.new_empty((*q.shape[:-1], q.shape[-1] * 2), dtype=ref.dequant_dtype("fp4_dequant", dtype))


def _fp4_fake_quant_fake(x, block=32):
    ref.check_act_quant("fp4_fake_quant", x, block, even=True)
    return torch.empty_like(x)


def _fp8_weight_quant_fake(w, block=128):
    scale_shape = ref.check_weight_quant("fp8_weight_quant", w, block)
    return w.new_empty(w.shape, dtype=torch.float8_e4m3fn), w.new_empty(scale_shape, dtype=torch.float32)


def _fp8_weight_dequant_fake(q, scale, block=128, dtype=None):
    ref.check_weight_dequant("fp8_weight_dequant", q, scale, block)
    return q.new_empty(q.shape, dtype=ref.dequant_dtype("fp8_weight_dequant", dtype))


def _fp8_weight_fake_quant_fake(w, block=128):
    ref.check_weight_quant("fp8_weight_fake_quant", w, block)
    return torch.empty_like(w)


def _hadamard_rotate_fake(x):
    ref.check_hadamard(x)
    return torch.empty_like(x)


_DECLARATIONS = [
    ("fp8_quant(Tensor x, int block=128) -> (Tensor, Tensor)", ref.fp8_quant, _fp8_quant_fake, False),
    ("fp8_dequant(Tensor q, Tensor scale, ScalarType? dtype=None) -> Tensor", ref.fp8_dequant, _fp8_dequant_fake,
     False),
    ("fp8_fake_quant(Tensor x, int block=128) -> Tensor", ref.fp8_fake_quant, _fp8_fake_quant_fake, False),
    ("fp4_quant(Tensor x, int block=32) -> (Tensor, Tensor)", ref.fp4_quant, _fp4_quant_fake, False),
    ("fp4_dequant(Tensor q, Tensor scale, ScalarType? dtype=None) -> Tensor", ref.fp4_dequant, _fp4_dequant_fake,
     False),
    ("fp4_fake_quant(Tensor x, int block=32) -> Tensor", ref.fp4_fake_quant, _fp4_fake_quant_fake, False),
    ("fp8_weight_quant(Tensor w, int block=128) -> (Tensor, Tensor)", ref.fp8_weight_quant, _fp8_weight_quant_fake,
     False),
    ("fp8_weight_dequant(Tensor q, Tensor scale, int block=128, ScalarType? dtype=None) -> Tensor",
     ref.fp8_weight_dequant, _fp8_weight_dequant_fake, False),
    ("fp8_weight_fake_quant(Tensor w, int block=128) -> Tensor", ref.fp8_weight_fake_quant,
     _fp8_weight_fake_quant_fake, False),
    ("hadamard_rotate(Tensor x) -> Tensor", ref.hadamard_rotate, _hadamard_rotate_fake, True),
]

SPECS = {
    spec.name: spec
    for spec in (
        library.define(schema, family="quant", reference=reference, fake=fake, differentiable=differentiable)
        for schema, reference, fake, differentiable in _DECLARATIONS
    )
}


def fp8_quant(x: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 e4m3 per-block activation quantisation (V4 ``act_quant`` with UE8M0 scales).

    For each contiguous block of ``block`` values along the last dim, in fp32:
    ``amax = max(|x|, 1e-4)``, ``s = 2 ** ceil(log2(amax / 448))``, ``q = e4m3(clamp(x / s, -448, 448))``
    rounded to nearest even.

    Args:
        x: ``[..., K]`` bf16/fp16/fp32/fp64; ``K`` a multiple of ``block``.
        block: values per scale along the last dim (V4: 128; 64 is also used).

    Returns:
        ``q [..., K]`` ``torch.float8_e4m3fn`` and ``scale [..., K/block]`` fp32 powers of two
        (:func:`scale_to_ue8m0` gives the UE8M0 bytes).

    Raises:
        ValueError: naming ``x`` or ``block`` for a wrong dtype, a non-positive block or ``K % block != 0``.
    """
    return torch.ops.v4_ascend.fp8_quant.default(x, block)


def fp8_dequant(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dequantise per-block FP8: ``x = q * scale`` per block, the block size being ``K / scale.shape[-1]``.

    Args:
        q: ``[..., K]`` ``torch.float8_e4m3fn``.
        scale: ``[..., K/block]`` fp32 scales, or UE8M0 ``uint8`` / ``torch.float8_e8m0fnu`` exponents.
        dtype: output dtype (default fp32, in which the result is exact).

    Returns:
        ``[..., K]`` in ``dtype``.

    Raises:
        ValueError: naming ``q``, ``scale`` or ``dtype`` for wrong dtypes or shapes that do not tile.
    """
    return torch.ops.v4_ascend.fp8_dequant.default(q, scale, dtype)


def fp8_fake_quant(x: torch.Tensor, block: int = 128) -> torch.Tensor:
    """FP8 quantise then dequantise (V4 ``act_quant`` in-place mode), returned in ``x``'s dtype.

    Args:
        x: ``[..., K]`` float, ``K`` a multiple of ``block``.
        block: values per scale along the last dim.

    Returns:
        ``fp8_dequant(*fp8_quant(x, block), x.dtype)``; exact in bf16/fp32 (fp16 may overflow at its
        range limit). No autograd: it is a rounding.
    """
    return torch.ops.v4_ascend.fp8_fake_quant.default(x, block)


def fp4_quant(x: torch.Tensor, block: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """FP4 e2m1 per-block quantisation with UE8M0 scales (V4 ``fp4_act_quant``), packed two per byte.

    Per block, in fp32: ``amax = max(|x|, 6 * 2**-126)``, ``s = 2 ** ceil(log2(amax / 6))``,
    ``q = e2m1(clamp(x / s, -6, 6))`` rounded to nearest even onto ``{0, .5, 1, 1.5, 2, 3, 4, 6}``
    (a tie goes to the even code: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4).
    A nibble is ``sign << 3 | code``; the sign of a value rounding to zero is kept.

    Args:
        x: ``[..., K]`` float; ``K`` a multiple of ``block``.
        block: values per scale (V4: 32), a positive even number.

    Returns:
        ``q [..., K/2]`` ``uint8``, element ``2i`` in the low nibble of byte ``i`` and ``2i+1`` in the
        high nibble (the ``torch.float4_e2m1fn_x2`` order: ``q.view(torch.float4_e2m1fn_x2)`` works),
        and ``scale [..., K/block]`` fp32 powers of two.

    Raises:
        ValueError: naming ``x`` or ``block``.
    """
    return torch.ops.v4_ascend.fp4_quant.default(x, block)


def fp4_dequant(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dequantise packed FP4: ``x = e2m1(q) * scale`` per block of ``2 * q.shape[-1] / scale.shape[-1]``.

    Args:
        q: ``[..., K/2]`` ``uint8`` or ``torch.float4_e2m1fn_x2`` (nibble order of :func:`fp4_quant`).
        scale: ``[..., K/block]`` fp32, or UE8M0 ``uint8`` / ``torch.float8_e8m0fnu`` exponents.
        dtype: output dtype (default fp32).

    Returns:
        ``[..., K]`` in ``dtype``.

    Raises:
        ValueError: naming ``q``, ``scale`` or ``dtype``.
    """
    return torch.ops.v4_ascend.fp4_dequant.default(q, scale, dtype)


def fp4_fake_quant(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    """FP4 quantise then dequantise (V4 ``fp4_act_quant`` in-place mode), in ``x``'s dtype.

    Args:
        x: ``[..., K]`` float, ``K`` a multiple of ``block``.
        block: values per scale, a positive even number.

    Returns:
        ``fp4_dequant(*fp4_quant(x, block), x.dtype)``. No autograd.
    """
    return torch.ops.v4_ascend.fp4_fake_quant.default(x, block)


def fp8_weight_quant(w: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 e4m3 weight quantisation with one UE8M0 scale per ``block x block`` tile of the last two dims.

    The rule is that of :func:`fp8_quant` with the amax taken over the tile (floor 1e-4). Edge tiles may
    be partial (``N`` or ``K`` not a multiple of ``block``).

    Args:
        w: ``[..., N, K]`` float (a Linear weight, or a stack of expert weights ``[E, N, K]``).
        block: tile side (V4: 128).

    Returns:
        ``q [..., N, K]`` ``torch.float8_e4m3fn`` and ``scale [..., ceil(N/block), ceil(K/block)]`` fp32.

    Raises:
        ValueError: naming ``w`` or ``block``.
    """
    return torch.ops.v4_ascend.fp8_weight_quant.default(w, block)


def fp8_weight_dequant(
    q: torch.Tensor, scale: torch.Tensor, block: int = 128, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Dequantise a block-scaled FP8 weight: ``w[n, k] = q[n, k] * scale[n // block, k // block]``.

    Args:
        q: ``[..., N, K]`` ``torch.float8_e4m3fn``.
        scale: ``[..., ceil(N/block), ceil(K/block)]`` fp32, or UE8M0 ``uint8`` / ``float8_e8m0fnu``.
        block: tile side.
        dtype: output dtype (default fp32).

    Returns:
        ``[..., N, K]`` in ``dtype``.

    Raises:
        ValueError: naming ``q``, ``scale``, ``block`` or ``dtype``.
    """
    return torch.ops.v4_ascend.fp8_weight_dequant.default(q, scale, block, dtype)


def fp8_weight_fake_quant(w: torch.Tensor, block: int = 128) -> torch.Tensor:
    """Block-scaled FP8 weight quantise then dequantise, in ``w``'s dtype.

    Args:
        w: ``[..., N, K]`` float.
        block: tile side.

    Returns:
        ``fp8_weight_dequant(*fp8_weight_quant(w, block), block, w.dtype)``. No autograd.
    """
    return torch.ops.v4_ascend.fp8_weight_fake_quant.default(w, block)


def hadamard_rotate(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal Walsh-Hadamard rotation of the last dim: ``x @ H_n / sqrt(n)`` (the V4 indexer's).

    ``H_n`` is the Sylvester matrix (``H_1 = [1]``, ``H_2m = [[H, H], [H, -H]]``), so
    ``H_n[i, j] = (-1) ** popcount(i & j)``; it is symmetric and the rotation is its own inverse.

    Args:
        x: ``[..., n]`` float, ``n`` a power of two (V4: 128).

    Returns:
        ``[..., n]`` in ``x``'s dtype, computed in fp32 (fp64 for fp64). Differentiable.

    Raises:
        ValueError: naming ``x`` when the last dim is not a power of two.
    """
    return torch.ops.v4_ascend.hadamard_rotate.default(x)
