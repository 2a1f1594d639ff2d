"""Engram family declarations: n-gram hashing, table lookup and the context-aware gate (V4.1, §5)."""

from __future__ import annotations

import torch

from v4_ascend import library
from v4_ascend.reference import engram as ref


def _engram_hash_fake(ids, multipliers, moduli, offsets, pad_id, history=None):
    B, S, columns = ref.check_engram_hash(ids, multipliers, moduli, offsets, pad_id, history)
    return ids.new_empty(B, S, columns)


def _engram_lookup_fake(table, rows, scale=None, out_dtype=None):
    shape, dtype = ref.check_engram_lookup(table, rows, scale, out_dtype)
    return table.new_empty(shape, dtype=dtype)


def _engram_hash_lookup_fake(ids, multipliers, moduli, offsets, pad_id, table, history=None, scale=None,
                             out_dtype=None):
    shape, dtype = ref.check_engram_hash_lookup(ids, multipliers, moduli, offsets, pad_id, table, history, scale,
                                                out_dtype)
    return table.new_empty(shape, dtype=dtype)


def _engram_gate_fake(h, key, value, weight, mask=None):
    ref.check_engram_gate(h, key, value, weight, mask)
    return torch.empty_like(h)


ENGRAM_HASH = library.define(
    "engram_hash(Tensor ids, Tensor multipliers, Tensor moduli, Tensor offsets, int pad_id, "
    "Tensor? history=None) -> Tensor",
    family="engram",
    reference=ref.engram_hash,
    fake=_engram_hash_fake,
)

ENGRAM_LOOKUP = library.define(
    "engram_lookup(Tensor table, Tensor rows, Tensor? scale=None, ScalarType? out_dtype=None) -> Tensor",
    family="engram",
    reference=ref.engram_lookup,
    fake=_engram_lookup_fake,
)

# Not differentiable, like its two parts: integer ids in, a gather of a frozen (often fp8, mapped) table out.
ENGRAM_HASH_LOOKUP = library.define(
    "engram_hash_lookup(Tensor ids, Tensor multipliers, Tensor moduli, Tensor offsets, int pad_id, Tensor table, "
    "Tensor? history=None, Tensor? scale=None, ScalarType? out_dtype=None) -> Tensor",
    family="engram",
    reference=ref.engram_hash_lookup,
    fake=_engram_hash_lookup_fake,
)

ENGRAM_GATE = library.define(
    "engram_gate(Tensor h, Tensor key, Tensor value, Tensor weight, Tensor? mask=None) -> Tensor",
    family="engram",
    reference=ref.engram_gate,
    fake=_engram_gate_fake,
    differentiable=True,
)


def engram_hash(
    ids: torch.Tensor,
    multipliers: torch.Tensor,
    moduli: torch.Tensor,
    offsets: torch.Tensor,
    pad_id: int,
    history: torch.Tensor | None = None,
) -> torch.Tensor:
    """Table rows of every n-gram (orders 2..N) ending at each position: V4.1's multiplicative-XOR hash.

    With ``tok_k`` the compressed id at position ``s - k`` (from ``history`` before ``ids[:, 0]``, and
    ``pad_id`` before that): ``h_1 = tok_0 * mu_0``, ``h_n = h_{n-1} XOR (tok_{n-1} * mu_{n-1})`` in int64
    with two's-complement wrap-around, and column ``(n-2) * Hh + j`` is
    ``(h_n mod moduli[n-2, j]) + offsets[n-2, j]`` (``mod`` has the sign of the positive modulus).
    Bit-exact on every backend. A caller that resets the look-back (a new document, a dead span) starts
    a new call with ``history`` filled with ``pad_id``.

    Args:
        ids: ``[B, S]`` int64 compressed (normalised) token ids, >= 0.
        multipliers: ``[N]`` int64 odd multipliers of the layer, one per look-back (N = max n-gram).
        moduli: ``[N-1, Hh]`` int64 primes, one per (order 2..N, head).
        offsets: ``[N-1, Hh]`` int64 first row of each (order, head) sub-table in the layer's table.
        pad_id: compressed id of the pad token, used for look-backs before the start.
        history: ``[B, N-1]`` int64, the compressed ids just before ``ids[:, 0]``, oldest first (decode
            and chunked prefill); ``None`` = start of the sequence (all ``pad_id``).

    Returns:
        ``rows [B, S, (N-1) * Hh]`` int64, ordered (order, head).

    Raises:
        ValueError: naming the argument, for wrong dtypes/shapes/devices, ``N < 2``, negative ids or
            ``pad_id``, or a non-positive modulus.
    """
    return torch.ops.v4_ascend.engram_hash.default(ids, multipliers, moduli, offsets, pad_id, history)


def engram_lookup(
    table: torch.Tensor,
    rows: torch.Tensor,
    scale: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Gather Engram table rows and concatenate them per position, dequantising FP8 tables.

    Only the gathered rows are read, so ``table`` (and ``scale``) may be memory-mapped from a file
    larger than RAM: ``torch.from_file(path, shared=True, size=R * E, dtype=torch.uint8).view(R, E)
    .view(torch.float8_e4m3fn)``, or ``torch.from_numpy(numpy.memmap(path, numpy.uint8, "r", shape=(R, E)))``
    viewed the same way. FP8 rows are dequantised as ``fp32(table[r, c]) * scale[r, c // 32]`` and cast
    to ``out_dtype``.

    Args:
        table: ``[R, E]`` bf16/fp16/fp32/fp64 table, or fp8 e4m3 (``float8_e4m3fn``) with E a multiple of 32.
        rows: ``[..., n_cols]`` int64 (or int32) rows, e.g. ``engram_hash``'s output; ``-1`` = no row
            (gives zeros).
        scale: for fp8 tables only, ``[R, E/32]`` block scales: UE8M0 exponent bytes (uint8 or
            ``float8_e8m0fnu``, value ``2^(e-127)``, 255 = NaN) or fp32.
        out_dtype: output dtype; default bf16 for fp8 tables, the table dtype otherwise.

    Returns:
        ``[..., n_cols * E]`` rows concatenated in column order (V4.1: 24 x 256 = 6144).

    Raises:
        ValueError: naming the argument, for a wrong rank/dtype/device, a scale missing for an fp8
            table (or given for another), a scale of the wrong shape, a row outside ``[-1, R)``, or a
            non-float ``out_dtype``.
    """
    return torch.ops.v4_ascend.engram_lookup.default(table, rows, scale, out_dtype)


def engram_hash_lookup(
    ids: torch.Tensor,
    multipliers: torch.Tensor,
    moduli: torch.Tensor,
    offsets: torch.Tensor,
    pad_id: int,
    table: torch.Tensor,
    history: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Hash every n-gram and gather (dequantising) its table row in one op: ``engram_lookup(table,
    engram_hash(ids, multipliers, moduli, offsets, pad_id, history), scale, out_dtype)``, bit for bit.

    Argument order: the required arguments of :func:`engram_hash` then the table, then the optional ones in
    the same order (``history`` of the hash, ``scale`` and ``out_dtype`` of the lookup). Fast kernels do it
    in one pass per token (hash the columns, prefetch the rows of tokens ahead, gather + dequantise) with no
    intermediate row tensor; like :func:`engram_lookup` they read only the hashed rows, so ``table`` and
    ``scale`` may be memory-mapped from a file larger than RAM. Non-contiguous inputs are accepted; the
    CPU kernel copies them first (pass a contiguous table: a strided one is copied whole on every call).

    Args:
        ids: ``[B, S]`` int64 compressed token ids, >= 0.
        multipliers: ``[N]`` int64 odd multipliers of the layer (N = max n-gram >= 2).
        moduli: ``[N-1, Hh]`` int64 positive bucket sizes (primes), one per (order 2..N, head).
        offsets: ``[N-1, Hh]`` int64 first table row of each (order, head) sub-table.
        pad_id: compressed id of the pad token (look-backs before the start), >= 0.
        table: ``[R, E]`` bf16/fp16/fp32/fp64 table, or fp8 e4m3 (``float8_e4m3fn``) with E a multiple of 32,
            on the device of ``ids``.
        history: ``[B, N-1]`` int64, the compressed ids just before ``ids[:, 0]``, oldest first; ``None`` =
            start of the sequence (all ``pad_id``).
        scale: for fp8 tables only, ``[R, E/32]`` UE8M0 exponent bytes (uint8 / ``float8_e8m0fnu``) or fp32
            block scales; rows are dequantised as ``fp32(table[r, c]) * scale[r, c // 32]``.
        out_dtype: output dtype; default bf16 for fp8 tables, the table dtype otherwise.

    Returns:
        ``[B, S, (N-1) * Hh * E]``: the rows of the columns (ordered (order, head)) concatenated per token;
        a hashed row of -1 (only possible with an offset of -1) gives zeros, as in :func:`engram_lookup`.

    Raises:
        ValueError: naming the argument, for everything :func:`engram_hash` and :func:`engram_lookup`
            reject (dtypes, shapes, devices, negative ids, non-positive moduli, a missing or extra
            ``scale``), and ``offsets`` when a hashed row falls outside ``[-1, R)``.
    """
    return torch.ops.v4_ascend.engram_hash_lookup.default(
        ids, multipliers, moduli, offsets, pad_id, table, history, scale, out_dtype
    )


def engram_gate(
    h: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Inject the Engram value into every residual stream through V4.1's context-aware gate.

    Per stream ``i`` (fp32 math, fp64 for fp64 inputs; ``D`` = last dim):
    ``dot_i = sum_d h_i[d] w_i[d] key_i[d] * rstd(h_i) * rstd(key_i) / sqrt(D)`` with
    ``rstd(z) = 1 / sqrt(mean_d(z^2) + 1e-20)``,
    ``gate_i = sigmoid(sign(dot_i) * sqrt(max(|dot_i|, 1e-6)))`` (0 where ``mask`` is False) and
    ``out_i = h_i + gate_i * value``.

    Args:
        h: ``[..., n, D]`` float residual streams (V4.1: n = 4, D = 5120).
        key: ``[..., n, D]`` per-stream keys (the first n*D outputs of the Engram kv projection), dtype of ``h``.
        value: ``[..., D]`` the shared value (the last D outputs), dtype of ``h``.
        weight: ``[n, D]`` float, the fused RMS weights ``q_weight * k_weight`` of the query (h) and key
            norms: both norms are weight-scaled and then dotted, so only their product matters
            (TileKernels' ``fused_weight``).
        mask: ``[...]`` bool, False for tokens that must not receive Engram (V4.1: image tokens), or None.

    Returns:
        ``[..., n, D]`` in the dtype of ``h``. Differentiable in ``h``, ``key``, ``value`` and ``weight``.

    Raises:
        ValueError: naming the argument, for wrong shapes/dtypes/devices.
    """
    return torch.ops.v4_ascend.engram_gate.default(h, key, value, weight, mask)
