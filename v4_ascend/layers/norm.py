"""RMSNorm variants of V4 attention (``shared/spec/v4_math.md`` §2.2): fp32 math, output in the input dtype."""

from __future__ import annotations

import torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * x / sqrt(mean(x**2) + eps)`` over the last dim."""
    y = x.to(_compute_dtype(x))
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)
    return (weight.to(y.dtype) * y).to(x.dtype)


def head_rms(q: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless per-head RMS of queries ``[..., H, d]``: each head is scaled to unit RMS."""
    y = q.to(_compute_dtype(q))
    return (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)).to(q.dtype)
