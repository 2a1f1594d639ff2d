"""Attention family declarations: sparse attention over shared K=V entries with a per-head sink."""

from __future__ import annotations

import torch

from v4_ascend import library
from v4_ascend.reference import attention as ref


def _sparse_attn_fake(q, kv, idx, sink, scale, extra_kv=None, extra_idx=None, topk_length=None, extra_topk_length=None):
    ref.check_sparse_attn(q, kv, idx, sink, scale, extra_kv, extra_idx, topk_length, extra_topk_length)
    T, H, _ = q.shape
    return torch.empty_like(q), q.new_empty((T, H), dtype=ref.accumulation_dtype(q.dtype))


SPARSE_ATTN = library.define(
    "sparse_attn(Tensor q, Tensor kv, Tensor idx, Tensor? sink, float scale, Tensor? extra_kv=None, "
    "Tensor? extra_idx=None, Tensor? topk_length=None, Tensor? extra_topk_length=None) -> (Tensor, Tensor)",
    family="attention",
    reference=ref.sparse_attn,
    fake=_sparse_attn_fake,
    differentiable=True,
)


def sparse_attn(
    q: torch.Tensor,
    kv: torch.Tensor,
    idx: torch.Tensor,
    sink: torch.Tensor | None,
    scale: float,
    extra_kv: torch.Tensor | None = None,
    extra_idx: torch.Tensor | None = None,
    topk_length: torch.Tensor | None = None,
    extra_topk_length: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One softmax over gathered shared K=V entries, with a per-head sink (V4 CSA/HCA/window attention).

    Args:
        q: ``[T, H, D]`` bf16/fp16/fp32/fp64 queries, already RMS-scaled and RoPE'd.
        kv: ``[N, D]`` pool of entries (same dtype as ``q``); each entry is both key and value.
        idx: ``[T, K]`` int32 entries of ``kv`` attended by each query; ``-1`` = unused slot.
        sink: ``[H]`` fp32 per-head sink logit (adds ``exp(sink[h])`` to the denominator only), or None.
        scale: logit scale (V4: ``D ** -0.5``).
        extra_kv, extra_idx: ``[N2, D]`` / ``[T, K2]`` second pool (the compressed cache) gathered into
            the same softmax.
        topk_length, extra_topk_length: ``[T]`` int32; only the first ``len`` slots of each row are read.

    Returns:
        ``out [T, H, D]`` in the input dtype and ``lse [T, H]`` fp32 (fp64 for fp64 inputs), the
        logsumexp of the valid scaled logits, sink excluded. A row with no valid slot gives ``out = 0``
        and ``lse = -inf``, never NaN. Accumulation is fp32.

    Raises:
        ValueError: naming the argument, for a wrong rank/shape/dtype/device, an index outside
            ``[-1, N)`` or a length outside ``[0, K]``.
    """
    return torch.ops.v4_ascend.sparse_attn.default(
        q, kv, idx, sink, scale, extra_kv, extra_idx, topk_length, extra_topk_length
    )
