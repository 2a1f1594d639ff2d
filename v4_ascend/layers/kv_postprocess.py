"""Post-processing of KV entries (``shared/spec/v4_math.md`` §2.4, §3.3 step 6, §3.4 steps 1-3).

- window KV and main compressed entries: FP8 e4m3 fake-quant of the NoPE part (7 blocks of 64,
  UE8M0 power-of-two scales); the RoPE part stays in the compute dtype;
- indexer keys and queries: Hadamard rotation (orthonormal Walsh-Hadamard) then FP4 e2m1 fake-quant
  (blocks of 32, UE8M0 scales).

The fake-quant helpers here are private to the attention layers (they mirror the quantisation family's
rules of §2.4 so that this module has no dependency on it).
"""

from __future__ import annotations

import math

import torch

from v4_ascend.layers.norm import rms_norm
from v4_ascend.layers.rope import apply_rope

FP8_E4M3_MAX = 448.0
FP4_E2M1_MAX = 6.0


def _ue8m0_scale(ratio: torch.Tensor) -> torch.Tensor:
    """Power-of-two ceiling ``2**ceil(log2(r))`` of positive fp32 values, exact (frexp-based)."""
    mantissa, exponent = torch.frexp(ratio)
    return torch.ldexp(torch.ones_like(ratio), exponent - (mantissa == 0.5).to(exponent.dtype))


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    if x.shape[-1] % block:
        raise ValueError(f"fake-quant: last dim {x.shape[-1]} is not a multiple of the block {block}")
    return x.to(torch.float32).unflatten(-1, (x.shape[-1] // block, block))


def _fake_quant_fp8_e4m3_ue8m0(x: torch.Tensor, block: int) -> torch.Tensor:
    """act_quant fake-quant: per block, ``s = pow2ceil(max(amax, 1e-4) / 448)``, e4m3(x / s) * s."""
    xb = _blocks(x, block)
    amax = xb.abs().amax(-1, keepdim=True).clamp(min=1e-4)
    scale = _ue8m0_scale(amax / FP8_E4M3_MAX)
    q = (xb / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn).to(torch.float32)
    return (q * scale).flatten(-2).to(x.dtype)


def _round_to_e2m1(v: torch.Tensor) -> torch.Tensor:
    """Nearest-even rounding of ``|v| <= 6`` onto {0, 0.5, 1, 1.5, 2, 3, 4, 6} (step 0.5 / 1 / 2 per binade)."""
    mag = v.abs()
    step = torch.where(mag < 2, 0.5, torch.where(mag < 4, 1.0, 2.0))
    return torch.copysign(torch.round(mag / step) * step, v)


def _fake_quant_fp4_e2m1_ue8m0(x: torch.Tensor, block: int) -> torch.Tensor:
    """fp4_act_quant fake-quant: per block, ``s = pow2ceil(max(amax, 6*2**-126) / 6)``, e2m1(x / s) * s."""
    xb = _blocks(x, block)
    amax = xb.abs().amax(-1, keepdim=True).clamp(min=FP4_E2M1_MAX * 2.0**-126)
    scale = _ue8m0_scale(amax / FP4_E2M1_MAX)
    q = _round_to_e2m1((xb / scale).clamp(-FP4_E2M1_MAX, FP4_E2M1_MAX))
    return (q * scale).flatten(-2).to(x.dtype)


def fp8_fake_quant_nope(x: torch.Tensor, rope_dim: int, block: int = 64) -> torch.Tensor:
    """FP8 fake-quant of the NoPE channels ``x[..., :D-rope_dim]``; the RoPE tail is kept as is."""
    nope = x.shape[-1] - rope_dim
    return torch.cat((_fake_quant_fp8_e4m3_ue8m0(x[..., :nope], block), x[..., nope:]), dim=-1)


def hadamard_rotate(x: torch.Tensor) -> torch.Tensor:
    """``x @ H_n / sqrt(n)`` over the last dim (Sylvester Walsh-Hadamard, n a power of two).

    Computed by butterflies (no matmul), so each row's result does not depend on how many rows are
    processed together.
    """
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"hadamard_rotate: last dim must be a power of two, got {n}")
    y = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    half = 1
    while half < n:
        pairs = y.unflatten(-1, (n // (2 * half), 2, half))
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2).flatten(-3)
        half *= 2
    return (y / math.sqrt(n)).to(x.dtype)


def main_kv_postprocess(
    entries: torch.Tensor, positions: torch.Tensor, norm_weight: torch.Tensor, freqs: torch.Tensor,
    eps: float, out_dtype: torch.dtype,
) -> torch.Tensor:
    """Main compressor: RMSNorm (cast to ``out_dtype``), RoPE at the block start, FP8 fake-quant of NoPE."""
    normed = rms_norm(entries.to(out_dtype), norm_weight, eps)
    return fp8_fake_quant_nope(apply_rope(normed, positions, freqs), 2 * freqs.numel())


def indexer_kv_postprocess(
    entries: torch.Tensor, positions: torch.Tensor, norm_weight: torch.Tensor, freqs: torch.Tensor,
    eps: float, out_dtype: torch.dtype,
) -> torch.Tensor:
    """Indexer compressor: RMSNorm, RoPE at the block start, Hadamard, FP4 fake-quant (block 32)."""
    normed = rms_norm(entries.to(out_dtype), norm_weight, eps)
    return indexer_rotate_quant(apply_rope(normed, positions, freqs))


def indexer_rotate_quant(x: torch.Tensor) -> torch.Tensor:
    """Hadamard rotation then FP4 e2m1 fake-quant (block 32): the indexer's q and k quantisation."""
    return _fake_quant_fp4_e2m1_ue8m0(hadamard_rotate(x), 32)
