"""Partial interleaved RoPE with YaRN (``shared/spec/v4_math.md`` §2.3).

RoPE rotates the **last** ``rope_dim`` channels of a head; channels ``(2i, 2i+1)`` of that slice form
one complex number (GPT-J interleaving, not the NeoX half split) multiplied by ``exp(j*pos*theta_i)``.
Angles are computed in fp64 from the absolute position, so a token gets the same rotation whether it
arrives in a prefill chunk or a decode step; the rotation itself runs in fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from v4_ascend.model.config import SWA, ModelConfig


@dataclass(frozen=True)
class Yarn:
    """YaRN frequency interpolation (no mscale: V4 keeps the softmax scale at d**-0.5)."""

    factor: float
    original_seq_len: int
    beta_fast: float
    beta_slow: float


def yarn_correction_range(rope_dim: int, base: float, yarn: Yarn) -> tuple[int, int]:
    """``(low, high)`` frequency indices between which YaRN ramps from original to interpolated."""

    def corr(n_rotations: float) -> float:
        return rope_dim * math.log(yarn.original_seq_len / (n_rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(corr(yarn.beta_fast)), 0)
    high = min(math.ceil(corr(yarn.beta_slow)), rope_dim - 1)
    return low, high


def rope_frequencies(rope_dim: int, base: float, yarn: Yarn | None = None) -> torch.Tensor:
    """``theta_i = base**(-2i/rope_dim)`` for ``i < rope_dim/2`` (fp64), YaRN-interpolated when given."""
    if rope_dim <= 0 or rope_dim % 2:
        raise ValueError(f"rope_frequencies: 'rope_dim' must be a positive even number, got {rope_dim}")
    theta = base ** (-torch.arange(0, rope_dim, 2, dtype=torch.float64) / rope_dim)
    if yarn is None or yarn.original_seq_len <= 0:
        return theta
    low, high = yarn_correction_range(rope_dim, base, yarn)
    span = max(high - low, 1e-3)  # low == high would divide by zero
    ramp = ((torch.arange(rope_dim // 2, dtype=torch.float64) - low) / span).clamp(0, 1)
    return theta * ramp / yarn.factor + theta * (1 - ramp)


def layer_rope_frequencies(config: ModelConfig, ratio: int) -> torch.Tensor:
    """The frequency table of a layer: base 160000 + YaRN for CSA/HCA layers, 10000 without YaRN for SWA."""
    if ratio == SWA:
        return rope_frequencies(config.rope_head_dim, config.rope_theta)
    yarn = Yarn(config.rope_factor, config.original_seq_len, config.beta_fast, config.beta_slow)
    return rope_frequencies(config.rope_head_dim, config.compress_rope_theta, yarn)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor, *, inverse: bool = False) -> torch.Tensor:
    """Rotate the last ``2*len(freqs)`` channels of ``x [T, ..., D]`` by ``positions [T]`` (integers).

    ``inverse=True`` rotates by ``-pos*theta`` (the conjugate), which undoes the forward rotation.
    Returns a new tensor in ``x``'s dtype; the leading channels are copied unchanged.
    """
    rope_dim = 2 * freqs.numel()
    if x.shape[-1] < rope_dim:
        raise ValueError(f"apply_rope: 'x' last dim must be >= {rope_dim}, got {x.shape[-1]}")
    if positions.dim() != 1 or positions.shape[0] != x.shape[0]:
        raise ValueError(f"apply_rope: 'positions' must be [{x.shape[0]}], got {tuple(positions.shape)}")
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    angles = positions.to(torch.float64, copy=True)[:, None] * freqs.to(positions.device)[None, :]
    cos, sin = angles.cos().to(compute), angles.sin().to(compute)
    if inverse:
        sin = -sin
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (rope_dim // 2,)
    cos, sin = cos.view(shape), sin.view(shape)
    pairs = x[..., x.shape[-1] - rope_dim:].to(compute).unflatten(-1, (rope_dim // 2, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1).flatten(-2)
    return torch.cat((x[..., : x.shape[-1] - rope_dim], rotated.to(x.dtype)), dim=-1)
