"""Attention family declarations: sparse attention with sink, the KV compressor and the lightning indexer."""

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


def _kv_compress_pool_fake(kv, score, ape, ratio, overlap):
    B, n, d = ref.check_kv_compress_pool(kv, score, ape, ratio, overlap)
    return kv.new_empty((B, n, d), dtype=ref.accumulation_dtype(kv.dtype))


def _kv_compress_fake(kv, score, ape, start_pos, seq_lens, kv_state, score_state, ratio, overlap):
    _, d, acc = ref.check_kv_compress(kv, score, ape, start_pos, seq_lens, kv_state, score_state, ratio, overlap)
    entries = torch.library.get_ctx().new_dynamic_size()
    return (
        kv.new_empty((entries, d), dtype=acc),
        kv.new_empty((entries,), dtype=torch.int32),
        kv.new_empty((entries,), dtype=torch.int32),
    )


def _indexer_topk_fake(q, k, weights, q_pos, ratio, topk, k_offset=None):
    T, _, _ = ref.check_indexer_topk(q, k, weights, q_pos, ratio, topk, k_offset)
    return q.new_empty((T, topk), dtype=torch.int32)


KV_COMPRESS_POOL = library.define(
    "kv_compress_pool(Tensor kv, Tensor score, Tensor ape, int ratio, bool overlap) -> Tensor",
    family="attention",
    reference=ref.kv_compress_pool,
    fake=_kv_compress_pool_fake,
    differentiable=True,
)

KV_COMPRESS = library.define(
    "kv_compress(Tensor kv, Tensor score, Tensor ape, Tensor start_pos, Tensor seq_lens, Tensor(a!) kv_state, "
    "Tensor(b!) score_state, int ratio, bool overlap) -> (Tensor, Tensor, Tensor)",
    family="attention",
    reference=ref.kv_compress,
    fake=_kv_compress_fake,
)

INDEXER_TOPK = library.define(
    "indexer_topk(Tensor q, Tensor k, Tensor weights, Tensor q_pos, int ratio, int topk, Tensor? k_offset=None) "
    "-> Tensor",
    family="attention",
    reference=ref.indexer_topk,
    fake=_indexer_topk_fake,
)


def kv_compress_pool(
    kv: torch.Tensor, score: torch.Tensor, ape: torch.Tensor, ratio: int, overlap: bool
) -> torch.Tensor:
    """Learned gated pooling of whole sequences from position 0 (the stateless, differentiable compressor).

    For each complete block ``i`` of ``ratio`` tokens and each channel ``f``:
    ``C[i, f] = sum_j softmax_j(score[j, f] + ape[j % ratio, f]) * kv[j, f]`` over the block's tokens.
    With ``overlap=True`` (CSA, ratio 4) the projected width is ``2*d``: entry ``i`` pools the first
    halves ``[0:d]`` of block ``i-1`` and the second halves ``[d:2d]`` of block ``i`` (8 candidates);
    for ``i = 0`` the previous block is absent (value 0, logit -inf). ``ape`` is added before the
    halves are rearranged. Trailing tokens of an incomplete block produce no entry.

    Args:
        kv: ``[B, S, c*d]`` float projected values ``W_kv x`` (``c = 2`` with overlap, else 1).
        score: ``[B, S, c*d]`` gate logits ``W_gate x``, same dtype as ``kv``.
        ape: ``[ratio, c*d]`` float learned intra-block positional bias of the logits.
        ratio: block length ``r`` (V4: 4 for CSA, 128 for HCA).
        overlap: CSA overlapping halves (requires an even last dim).

    Returns:
        ``[B, S // ratio, d]`` pooled entries in fp32 (fp64 for fp64 inputs): the math runs in fp32 and
        the caller casts before the compressor norm. Differentiable in ``kv``, ``score`` and ``ape``.

    Raises:
        ValueError: naming the argument, for wrong ranks/shapes/dtypes, ``ratio < 1`` or an odd width
            with ``overlap``.
    """
    return torch.ops.v4_ascend.kv_compress_pool.default(kv, score, ape, ratio, overlap)


def kv_compress(
    kv: torch.Tensor,
    score: torch.Tensor,
    ape: torch.Tensor,
    start_pos: torch.Tensor,
    seq_lens: torch.Tensor,
    kv_state: torch.Tensor,
    score_state: torch.Tensor,
    ratio: int,
    overlap: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stateful KV compressor for chunked prefill and decode of a batch of sequences (V4 Compressor).

    Same pooling as :func:`kv_compress_pool`, but the token rows may start anywhere in their sequence
    and the unfinished block (and, with overlap, the previous complete block) is carried in
    per-sequence state, so that any split of a sequence into calls emits bit-identical entries.

    Args:
        kv: ``[S_total, c*d]`` float projected values of the new tokens of all sequences, concatenated
            in sequence order (token-flattened; ``c = 2`` with overlap, else 1).
        score: ``[S_total, c*d]`` gate logits, same dtype as ``kv``.
        ape: ``[ratio, c*d]`` float positional bias, added to the logit of the token at position ``p``
            as ``ape[p % ratio]``.
        start_pos: ``[B]`` int32 absolute position of each sequence's first new token (its cached
            length).
        seq_lens: ``[B]`` int32 new tokens per sequence (0 allowed); sums to ``S_total``.
        kv_state, score_state: ``[B, c*ratio, c*d]`` fp32 (fp64 for fp64 inputs) per-sequence state,
            **mutated in place**. Rows ``[0, ratio)`` hold (overlap only) the previous complete block,
            then the current block's tokens at row ``offset + p % ratio``; ``score_state`` stores the
            ape-biased logits. A new sequence must start with ``kv_state = 0`` and
            ``score_state = -inf`` (reset them between sequences).
        ratio: block length (4 for CSA, 128 for HCA).
        overlap: CSA overlapping halves.

    Returns:
        ``(entries [M, d], positions [M], seq [M])``: the ``M`` blocks completed by this call (a
        data-dependent count), ordered by sequence then position; ``entries`` pooled in fp32 (fp64
        for fp64 inputs), ``positions`` int32 absolute block start ``i * ratio`` (the RoPE position of
        entry ``i``), ``seq`` int32 the sequence (row of ``start_pos``) of each entry. Not
        differentiable (it mutates its state); train with :func:`kv_compress_pool`.

    Raises:
        ValueError: naming the argument, for wrong shapes/dtypes, negative ``start_pos`` or
            ``seq_lens`` that do not add up to the rows of ``kv``.
    """
    return torch.ops.v4_ascend.kv_compress.default(
        kv, score, ape, start_pos, seq_lens, kv_state, score_state, ratio, overlap
    )


def indexer_topk(
    q: torch.Tensor,
    k: torch.Tensor,
    weights: torch.Tensor,
    q_pos: torch.Tensor,
    ratio: int,
    topk: int,
    k_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lightning-indexer selection of compressed entries (CSA): weighted-ReLU scores and top-k.

    ``score[t, i] = sum_h weights[t, h] * relu(q[t, h] . k[k_offset[t] + i])`` for the visible entries
    ``0 <= i < (q_pos[t] + 1) // ratio``; the result lists the ``min(topk, visible)`` best entries of
    each query, by descending score with ties broken by the lower index, then ``-1`` padding. Scores
    are accumulated in fp32 (fp64 for fp64 inputs). Queries are processed in chunks, so the largest
    score block held is bounded (about 4M elements) whatever the context length.

    Args:
        q: ``[T, H, d]`` float index queries (already RoPE'd / rotated / quantised by the caller).
        k: ``[N, d]`` indexer key pool, same dtype as ``q``.
        weights: ``[T, H]`` float per-head weights (the caller folds in ``d**-0.5 * H**-0.5``).
        q_pos: ``[T]`` int32 absolute position of each query in its sequence.
        ratio: compression ratio of the keys (4 in V4).
        topk: output width (V4: 512 Flash, 1024 Pro).
        k_offset: ``[T]`` int32 row of ``k`` holding entry 0 of each query's sequence (batched pools);
            None means 0.

    Returns:
        ``idx [T, topk]`` int32 rows of ``k`` (``k_offset[t] + i``), ``-1`` for unused slots.

    Raises:
        ValueError: naming the argument, for wrong shapes/dtypes, negative positions, non-positive
            ``ratio``/``topk``, or visible entries beyond the end of ``k``.
    """
    return torch.ops.v4_ascend.indexer_topk.default(q, k, weights, q_pos, ratio, topk, k_offset)
