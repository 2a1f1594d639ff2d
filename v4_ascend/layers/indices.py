"""Index builders for V4 attention (``shared/spec/v4_math.md`` §3.3, §3.6).

All builders return int32 tensors with ``-1`` for an unused slot, as :func:`v4_ascend.ops.sparse_attn`
expects. Windows list their entries oldest first.
"""

from __future__ import annotations

import torch


def window_positions(q_pos: torch.Tensor, window: int) -> torch.Tensor:
    """Prefill window ``[t-W+1, t]`` of each query position ``q_pos [T]``: ``[T, W]`` absolute positions.

    Column ``j`` holds position ``t - W + 1 + j`` (oldest first, the query itself last); positions
    before the sequence start are ``-1``.
    """
    offsets = torch.arange(1 - window, 1, device=q_pos.device, dtype=torch.int64)
    pos = q_pos.to(torch.int64)[:, None] + offsets[None, :]
    return pos.masked_fill(pos < 0, -1).to(torch.int32)


def ring_window_indices(q_pos: torch.Tensor, window: int, base: torch.Tensor | None = None) -> torch.Tensor:
    """Decode window in a ring buffer of ``window`` slots (slot = position mod W), token ``t`` already stored.

    Returns ``[B, W]``: the slots of positions ``max(0, t-W+1) .. t`` oldest first, then ``-1`` for the
    unfilled slots of a sequence shorter than the window. ``base [B]`` (the row of each sequence's slot
    0 in a flattened ring pool) is added to every valid slot.
    """
    filled = (q_pos.to(torch.int64) + 1).clamp(max=window)
    j = torch.arange(window, device=q_pos.device, dtype=torch.int64)[None, :]
    pos = q_pos.to(torch.int64)[:, None] - filled[:, None] + 1 + j
    slots = pos % window
    if base is not None:
        slots = slots + base.to(torch.int64)[:, None]
    return slots.masked_fill(j >= filled[:, None], -1).to(torch.int32)


def visible_compressed(q_pos: torch.Tensor, ratio: int) -> torch.Tensor:
    """Number of compressed entries visible to each query: ``(t + 1) // ratio`` (int64)."""
    return (q_pos.to(torch.int64) + 1) // ratio


def compressed_indices(
    q_pos: torch.Tensor, ratio: int, base: torch.Tensor | None = None, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """HCA candidate lists: every visible compressed entry ``i < (t+1)//ratio`` of each query.

    Returns ``(idx [T, width], length [T])`` int32 where ``idx[t, j] = base[t] + j`` for
    ``j < length[t]`` and ``-1`` after; ``width`` defaults to the largest ``length``. ``length`` is the
    ``extra_topk_length`` of :func:`v4_ascend.ops.sparse_attn`.
    """
    length = visible_compressed(q_pos, ratio)
    longest = int(length.max()) if length.numel() else 0
    width = longest if width is None else width
    if width < longest:
        raise ValueError(f"compressed_indices: 'width' must be >= {longest} visible entries, got {width}")
    j = torch.arange(width, device=q_pos.device, dtype=torch.int64)[None, :]
    idx = j + (0 if base is None else base.to(torch.int64)[:, None])
    idx = idx.masked_fill(j >= length[:, None], -1)
    return idx.to(torch.int32), length.to(torch.int32)
