"""Reference kernels of the Engram family (V4.1 conditional memory, v4_math.md §5).

``engram_hash`` turns compressed token ids into table rows (bit-exact int64 arithmetic),
``engram_lookup`` gathers (and dequantises) those rows from a table that may be memory-mapped from
disk, ``engram_hash_lookup`` is the two composed (one op, one pass in the fast kernels), and
``engram_gate`` injects the projected value into each residual stream through a context-aware gate.
"""

from __future__ import annotations

import torch

from v4_ascend import _validation as v
from v4_ascend.reference.attention import accumulation_dtype

# FP8 tables carry one scale per FP8_BLOCK consecutive channels of a row.
FP8_BLOCK = 32
FP8_TABLE_DTYPE = torch.float8_e4m3fn
SCALE_DTYPES = (torch.uint8, torch.float8_e8m0fnu, torch.float32)
# Gate constants of V4.1 (engram RMS eps and the signed-sqrt clamp).
GATE_EPS = 1e-20
GATE_CLAMP = 1e-6


def check_engram_hash(ids, multipliers, moduli, offsets, pad_id, history, op="engram_hash"):
    """Returns ``(B, S, columns)``; errors name ``op``."""
    v.tensor(op, "ids", ids, rank=2, dtypes=(torch.int64,))
    B, S = ids.shape
    v.tensor(op, "multipliers", multipliers, rank=1, dtypes=(torch.int64,), device=ids.device)
    N = multipliers.shape[0]
    if N < 2:
        v.fail(op, "multipliers", "of length max_ngram >= 2 (one per look-back)", f"length {N}")
    v.tensor(op, "moduli", moduli, dtypes=(torch.int64,), shape=(N - 1, None), device=ids.device)
    v.tensor(op, "offsets", offsets, dtypes=(torch.int64,), shape=tuple(moduli.shape), device=ids.device)
    if pad_id < 0:
        v.fail(op, "pad_id", "a compressed token id >= 0", pad_id)
    if history is not None:
        v.tensor(op, "history", history, dtypes=(torch.int64,), shape=(B, N - 1), device=ids.device)
    return B, S, moduli.numel()


def _check_values(op: str, arg: str, x: torch.Tensor, low: int, what: str) -> None:
    if x.numel() and int(x.min()) < low:
        v.fail(op, arg, what, f"a value {int(x.min())}")


def check_engram_hash_values(ids, moduli, history, op="engram_hash"):
    """Data checks of the hash inputs (they read the tensors): ids and history >= 0, moduli >= 1."""
    _check_values(op, "ids", ids, 0, "compressed token ids >= 0")
    _check_values(op, "moduli", moduli, 1, "positive bucket sizes")
    if history is not None:
        _check_values(op, "history", history, 0, "compressed token ids >= 0")


def engram_hash(ids, multipliers, moduli, offsets, pad_id, history=None):
    B, S, _ = check_engram_hash(ids, multipliers, moduli, offsets, pad_id, history)
    check_engram_hash_values(ids, moduli, history)
    back = multipliers.shape[0] - 1
    if history is None:
        history = ids.new_full((B, back), pad_id)
    window = torch.cat([history, ids], dim=1)  # [B, back + S]: look-back k of position s is back + s - k

    def look_back(k: int) -> torch.Tensor:
        # int64 products wrap around exactly as the two's-complement reference does.
        return window[:, back - k : back - k + S] * multipliers[k]

    running, columns = look_back(0), []
    for k in range(1, back + 1):
        running = torch.bitwise_xor(running, look_back(k))  # the hash of the (k+1)-gram
        # torch.remainder takes the sign of the (positive) divisor, as NumPy's and Python's %.
        columns.append(torch.remainder(running.unsqueeze(-1), moduli[k - 1]) + offsets[k - 1])
    return torch.cat(columns, dim=-1)


def check_engram_table(table, scale, out_dtype, op="engram_lookup", device=None):
    """Checks of a table, its fp8 block scales and the output dtype; returns the output dtype."""
    v.tensor(op, "table", table, rank=2, dtypes=(*v.FLOAT_DTYPES, FP8_TABLE_DTYPE), device=device)
    R, E = table.shape
    if table.dtype == FP8_TABLE_DTYPE:
        if E % FP8_BLOCK:
            v.fail(op, "table", f"[R, E] with E a multiple of {FP8_BLOCK} for an fp8 table", tuple(table.shape))
        if scale is None:
            v.fail(op, "scale", "a [R, E/32] UE8M0 (uint8 / float8_e8m0fnu) or fp32 tensor for an fp8 table", None)
        v.tensor(op, "scale", scale, dtypes=SCALE_DTYPES, shape=(R, E // FP8_BLOCK), device=table.device)
        default = torch.bfloat16
    else:
        if scale is not None:
            v.fail(op, "scale", f"None for a {table.dtype} table (scales are for fp8 tables)", "a tensor")
        default = table.dtype
    if out_dtype is not None and out_dtype not in v.FLOAT_DTYPES:
        v.fail(op, "out_dtype", "None or a float dtype (bf16, fp16, fp32, fp64)", out_dtype)
    return out_dtype or default


def check_engram_lookup(table, rows, scale, out_dtype):
    """Returns ``(output shape, output dtype)``."""
    op = "engram_lookup"
    out = check_engram_table(table, scale, out_dtype, op)
    v.tensor(op, "rows", rows, dtypes=(torch.int64, torch.int32), device=table.device)
    if rows.dim() < 1:
        v.fail(op, "rows", "at least 1-D ([..., n_cols])", "a 0-D tensor")
    return (*rows.shape[:-1], rows.shape[-1] * table.shape[1]), out


def block_scales(scale: torch.Tensor) -> torch.Tensor:
    """fp32 scales from UE8M0 exponent bytes (``2^(e-127)``, 255 = NaN) or fp32 block scales."""
    if scale.dtype == torch.uint8:
        scale = scale.view(torch.float8_e8m0fnu)
    return scale.to(torch.float32)


def engram_lookup(table, rows, scale=None, out_dtype=None):
    shape, out = check_engram_lookup(table, rows, scale, out_dtype)
    R, E = table.shape
    flat = rows.reshape(-1).long()
    v.index_range("engram_lookup", "rows", flat, R, allow_invalid=True)
    safe = flat.clamp_min(0)
    # index_select reads only the gathered rows, so a memory-mapped table is never loaded whole.
    picked = table.index_select(0, safe)
    if table.dtype == FP8_TABLE_DTYPE:
        scales = block_scales(scale.index_select(0, safe))
        picked = (picked.to(torch.float32).view(-1, E // FP8_BLOCK, FP8_BLOCK) * scales.unsqueeze(-1)).view(-1, E)
    picked = picked.to(out).masked_fill((flat < 0).unsqueeze(-1), 0)
    return picked.view(shape)


def check_engram_hash_lookup(ids, multipliers, moduli, offsets, pad_id, table, history, scale, out_dtype):
    """Returns ``(output shape, output dtype)``; errors name ``engram_hash_lookup``."""
    op = "engram_hash_lookup"
    B, S, columns = check_engram_hash(ids, multipliers, moduli, offsets, pad_id, history, op)
    out = check_engram_table(table, scale, out_dtype, op, device=ids.device)
    return (B, S, columns * table.shape[1]), out


def check_hashed_rows(op: str, rows: torch.Tensor, R: int) -> None:
    """Hashed rows lie in ``[offsets, offsets + moduli)`` per column: the table must hold them (-1 = zeros)."""
    if rows.numel():
        lo, hi = int(rows.min()), int(rows.max())
        if lo < -1 or hi >= R:
            v.fail(op, "offsets", f"placing every hashed row in [-1, R) with R = {R} table rows",
                   f"a row {lo if lo < -1 else hi}")


def engram_hash_lookup(ids, multipliers, moduli, offsets, pad_id, table, history=None, scale=None, out_dtype=None):
    check_engram_hash_lookup(ids, multipliers, moduli, offsets, pad_id, table, history, scale, out_dtype)
    op = "engram_hash_lookup"
    check_engram_hash_values(ids, moduli, history, op)
    rows = engram_hash(ids, multipliers, moduli, offsets, pad_id, history)
    check_hashed_rows(op, rows, table.shape[0])
    return engram_lookup(table, rows, scale, out_dtype)


def check_engram_gate(h, key, value, weight, mask):
    op = "engram_gate"
    v.tensor(op, "h", h, dtypes=v.FLOAT_DTYPES)
    if h.dim() < 2 or h.shape[-1] < 1:
        v.fail(op, "h", "[..., n, D] with D >= 1", f"shape {tuple(h.shape)}")
    lead, (n, D) = tuple(h.shape[:-2]), h.shape[-2:]
    v.tensor(op, "key", key, shape=(*lead, n, D), device=h.device)
    v.same_dtype(op, "key", key, h, "h")
    v.tensor(op, "value", value, shape=(*lead, D), device=h.device)
    v.same_dtype(op, "value", value, h, "h")
    v.tensor(op, "weight", weight, dtypes=v.FLOAT_DTYPES, shape=(n, D), device=h.device)
    if mask is not None:
        v.tensor(op, "mask", mask, dtypes=(torch.bool,), shape=lead, device=h.device)


def engram_gate(h, key, value, weight, mask=None):
    check_engram_gate(h, key, value, weight, mask)
    acc = accumulation_dtype(h.dtype)
    hf, kf = h.to(acc), key.to(acc)
    # RMS-normalise h and key per (token, stream) over D, not jointly over the streams.
    rstd = torch.rsqrt(hf.square().mean(-1) + GATE_EPS) * torch.rsqrt(kf.square().mean(-1) + GATE_EPS)
    dot = (hf * weight.to(acc) * kf).sum(-1) * rstd * h.shape[-1] ** -0.5
    gate = torch.sigmoid(torch.sign(dot) * dot.abs().clamp_min(GATE_CLAMP).sqrt())
    if mask is not None:
        gate = torch.where(mask.unsqueeze(-1), gate, torch.zeros((), dtype=acc, device=gate.device))
    return (hf + gate.unsqueeze(-1) * value.to(acc).unsqueeze(-2)).to(h.dtype)
