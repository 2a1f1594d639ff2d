"""Post-processing of KV entries (``shared/spec/v4_math.md`` §2.4, §3.3 step 6, §3.4 steps 1-3).

- window KV and main compressed entries: FP8 e4m3 fake-quant of the NoPE part (7 blocks of 64,
  UE8M0 power-of-two scales); the RoPE part stays in the compute dtype;
- indexer keys and queries: Hadamard rotation (orthonormal Walsh-Hadamard) then FP4 e2m1 fake-quant
  (blocks of 32, UE8M0 scales).
"""

from __future__ import annotations

import torch

from v4_ascend import ops
from v4_ascend.layers.norm import rms_norm
from v4_ascend.layers.rope import apply_rope


def fp8_fake_quant_nope(x: torch.Tensor, rope_dim: int, block: int = 64) -> torch.Tensor:
    """FP8 fake-quant of the NoPE channels ``x[..., :D-rope_dim]``; the RoPE tail is kept as is."""
    nope = x.shape[-1] - rope_dim
    return torch.cat((ops.fp8_fake_quant(x[..., :nope].contiguous(), block), x[..., nope:]), dim=-1)


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
    return ops.fp4_fake_quant(ops.hadamard_rotate(x), 32)
