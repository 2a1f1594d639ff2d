"""engram_lookup cases (with engram_hash on the decode path) and the fused engram_hash_lookup: V4.1-Flash's
24 hash columns x 256 per token over tables of at least 1 GiB (bf16, and fp8 e4m3 with per-32 fp32 scales
dequantised to bf16), against ``F.embedding`` on the rows (and on the scales, then a multiply); the fused
op also against the two-op path (our engram_hash then our engram_lookup). A random-row gather is
bandwidth-bound: GB/s counts the gathered rows (and scales) read plus the output written."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from v4_ascend import library
from v4_ascend.bench.harness import Case, Workload
from v4_ascend.ops import engram_hash, engram_hash_lookup, engram_lookup
from v4_ascend.ops.engram_layout import engram_layout

WIDTH, MAX_NGRAM, HEADS = 256, 4, 8  # V4.1-Flash: orders 2..4 x 8 heads = 24 columns of 256
COMPRESSED_VOCAB, PAD_ID = 99_092, 2
BLOCK = 32  # fp8 scale block


def _layout(table_bytes: int, element_size: int):
    """A V4.1-style layout (24 prime-sized sub-tables) whose table holds at least `table_bytes`."""
    columns = (MAX_NGRAM - 1) * HEADS
    smallest_prime = -(-table_bytes // (columns * WIDTH * element_size))
    return engram_layout([1], MAX_NGRAM, HEADS, smallest_prime, COMPRESSED_VOCAB)[0]


def _fp8_table(rows: int, device) -> torch.Tensor:
    """Random e4m3 bytes with the top exponent bit cleared: finite, mostly non-zero, |x| < 2."""
    raw = torch.randint(0, 256, (rows, WIDTH), dtype=torch.uint8, device=device).bitwise_and_(0xBF)
    return raw.view(torch.float8_e4m3fn)


def lookup(device, *, fp8: bool, tokens: int, with_hash: bool, table_bytes: int = 1 << 30, fused: bool = False):
    """The lookup of `tokens` tokens; `with_hash` times the hash too (the peer's hash is the reference);
    `fused` (with `with_hash`) times engram_hash_lookup, against the peer and the two-op path."""
    layout = _layout(table_bytes, 1 if fp8 else 2)
    R = layout.num_rows
    multipliers, moduli, offsets = (t.to(device) for t in (layout.multipliers, layout.moduli, layout.offsets))
    ids = torch.randint(0, COMPRESSED_VOCAB, (1, tokens), dtype=torch.int64, device=device)
    history = torch.randint(0, COMPRESSED_VOCAB, (1, MAX_NGRAM - 1), dtype=torch.int64, device=device)
    rows = engram_hash(ids, multipliers, moduli, offsets, PAD_ID, history)  # [1, tokens, 24]
    columns = rows.shape[-1]
    if fp8:
        table = _fp8_table(R, device)
        scale = torch.rand(R, WIDTH // BLOCK, device=device).add_(0.01)
    else:
        table = torch.empty(R, WIDTH, dtype=torch.bfloat16, device=device).uniform_(-1.0, 1.0)
        scale = None

    def peer_lookup(found):
        gathered = F.embedding(found, table)
        if scale is not None:
            scales = F.embedding(found, scale).repeat_interleave(BLOCK, dim=-1)
            gathered = (gathered.float() * scales).to(torch.bfloat16)
        return gathered.flatten(-2)

    def two_ops():
        return engram_lookup(table, engram_hash(ids, multipliers, moduli, offsets, PAD_ID, history), scale)

    def fused_op():
        return engram_hash_lookup(ids, multipliers, moduli, offsets, PAD_ID, table, history, scale)

    if with_hash:
        reference_hash = library.ops()["engram_hash"].reference
        kernel = fused_op if fused else two_ops

        def peer():
            return peer_lookup(reference_hash(ids, multipliers, moduli, offsets, PAD_ID, history))

        name, note = "peer: reference hash + F.embedding", "timed calls include the hash of the token ids; "
    else:
        def kernel():
            return engram_lookup(table, rows, scale)

        def peer():
            return peer_lookup(rows)

        name, note = "peer: F.embedding", "rows hashed once, outside the timed calls; "
    if fp8:
        name += " (+ scales, multiply)"
    baselines = {name: peer, "two ops: engram_hash + engram_lookup": two_ops} if fused else {name: peer}
    gathered = tokens * columns * WIDTH * (1 + 4 / BLOCK if fp8 else 2)
    return Workload(
        kernel=kernel,
        baselines=baselines,
        bytes=float(gathered + tokens * columns * WIDTH * 2),
        note=note + f"table {R} x {WIDTH} {'fp8 e4m3 + fp32 scales' if fp8 else 'bf16'} "
        f"({table.nbytes / 2**30:.2f} GiB), random rows; outputs bf16, allocated per call",
    )


def _cases():
    for fp8 in (False, True):
        dtype = torch.float8_e4m3fn if fp8 else torch.bfloat16
        kind = "fp8" if fp8 else "bf16"
        yield Case("engram_lookup", f"v41-flash-prefill-4096-{kind}", "4096 tokens x 24 columns x 256, table >= 1 GiB",
                   dtype, partial(lookup, fp8=fp8, tokens=4096, with_hash=False), bound="copy")
        yield Case("engram_lookup", f"v41-flash-decode-128-{kind}", "128 tokens x 24 columns x 256 incl. the hash, "
                   "table >= 1 GiB", dtype, partial(lookup, fp8=fp8, tokens=128, with_hash=True), bound="copy")
    for fp8, tokens, phase in [(False, 4096, "prefill"), (True, 4096, "prefill"), (False, 128, "decode"),
                               (True, 128, "decode")]:
        dtype = torch.float8_e4m3fn if fp8 else torch.bfloat16
        kind = "fp8" if fp8 else "bf16"
        yield Case("engram_hash_lookup", f"v41-flash-{phase}-{tokens}-{kind}",
                   f"{tokens} tokens x 24 columns x 256 incl. the hash, table >= 1 GiB", dtype,
                   partial(lookup, fp8=fp8, tokens=tokens, with_hash=True, fused=True), bound="copy")
    yield Case("engram_hash_lookup", "decode-128-bf16-small-table", "128 tokens x 24 columns x 256 incl. the hash, "
               "32 MiB table", torch.bfloat16,
               partial(lookup, fp8=False, tokens=128, with_hash=True, fused=True, table_bytes=32 << 20),
               bound="copy", quick=True)
    yield Case("engram_lookup", "decode-128-bf16-small-table", "128 tokens x 24 columns x 256 incl. the hash, 32 MiB "
               "table", torch.bfloat16, partial(lookup, fp8=False, tokens=128, with_hash=True, table_bytes=32 << 20),
               bound="copy", quick=True)


CASES = list(_cases())
