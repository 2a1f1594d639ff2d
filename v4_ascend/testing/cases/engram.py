"""Input cases of the Engram family: the V4.1-Flash layout (layer 1) and small synthetic layouts."""

from __future__ import annotations

import torch

from v4_ascend.ops.engram_layout import engram_layout
from v4_ascend.testing.cases import Case, randint, randn, register

V41_COMPRESSED_VOCAB = 99_092
V41_PAD_ID = 2


def _v41_layer():
    return engram_layout([1, 14], 4, 8, 16_000_000, V41_COMPRESSED_VOCAB)[0]


def _hash_args(layout, device):
    return tuple(t.to(device) for t in (layout.multipliers, layout.moduli, layout.offsets))


@register("engram_hash", dtypes=(torch.float32,))
def engram_hash_cases(device, dtype, gen):
    v41 = _v41_layer()
    tiny = engram_layout([3], 2, 1, 5, 7)[0]  # bigrams, one head, prime 5
    ids = randint(0, V41_COMPRESSED_VOCAB, (2, 37), dtype=torch.int64, device=device, gen=gen)
    history = randint(0, V41_COMPRESSED_VOCAB, (2, 3), dtype=torch.int64, device=device, gen=gen)
    decode = randint(0, V41_COMPRESSED_VOCAB, (4, 1), dtype=torch.int64, device=device, gen=gen)
    decode_history = randint(0, V41_COMPRESSED_VOCAB, (4, 3), dtype=torch.int64, device=device, gen=gen)
    # Large ids make the products wrap around int64.
    big = randint(2**40, 2**50, (1, 9), dtype=torch.int64, device=device, gen=gen)
    return [
        Case("v41-prefill-b2", (ids, *_hash_args(v41, device), V41_PAD_ID)),
        Case("v41-chunk-with-history", (ids, *_hash_args(v41, device), V41_PAD_ID, history)),
        Case("v41-decode-b4", (decode, *_hash_args(v41, device), V41_PAD_ID, decode_history)),
        Case("shorter-than-window", (ids[:, :2], *_hash_args(v41, device), V41_PAD_ID)),
        Case("wrapping-products", (big, *_hash_args(v41, device), 0)),
        Case("tiny-bigram", (randint(0, 7, (3, 5), dtype=torch.int64, device=device, gen=gen),
                             *_hash_args(tiny, device), 6)),
    ]


def _rows(R, shape, *, device, gen, holes=False):
    rows = randint(0, R, shape, dtype=torch.int64, device="cpu", gen=gen)
    rows.view(-1)[0] = R - 1  # the last row of the table
    if holes:
        rows.view(-1)[1] = -1
    return rows.to(device)


def _fp8_table(R, E, *, device, gen):
    # Values spread over the e4m3 range (|x| <= 448), including subnormals.
    values = randn(R, E, dtype=torch.float32, device="cpu", gen=gen, scale=40.0)
    return values.clamp(-448, 448).to(torch.float8_e4m3fn).to(device)


@register("engram_lookup", dtypes=(torch.float32, torch.bfloat16, torch.float16))
def engram_lookup_cases(device, dtype, gen):
    cases = []
    R, E = 97, 256
    table = randn(R, E, dtype=dtype, device=device, gen=gen)
    cases.append(Case("v41-decode-24-cols", (table, _rows(R, (2, 1, 24), device=device, gen=gen))))
    cases.append(Case("prefill-with-hole", (table, _rows(R, (3, 5, 4), device=device, gen=gen, holes=True))))
    cases.append(Case("int32-rows-one-col", (table, _rows(R, (6, 1), device=device, gen=gen).int())))
    fp8 = _fp8_table(R, E, device=device, gen=gen)
    ue8m0 = randint(112, 130, (R, E // 32), dtype=torch.uint8, device=device, gen=gen)
    fp32_scale = torch.rand(R, E // 32, generator=gen).add(0.01).to(device)
    rows = _rows(R, (2, 3, 24), device=device, gen=gen, holes=True)
    cases.append(Case("fp8-ue8m0", (fp8, rows, ue8m0), {"out_dtype": dtype}))
    cases.append(Case("fp8-fp32-scale", (fp8, rows, fp32_scale), {"out_dtype": dtype}))
    cases.append(Case("fp8-default-bf16", (fp8, rows[0], ue8m0)))
    return cases


@register("engram_gate")
def engram_gate_cases(device, dtype, gen):
    cases = []
    # (name, leading shape, n, D, with mask)
    for name, lead, n, D, masked in [
        ("v41-decode", (2,), 4, 5120, False),
        ("prefill-masked", (2, 6), 4, 128, True),
        ("odd-n3-d40", (5,), 3, 40, True),
        ("empty", (0,), 4, 16, True),
    ]:
        h = randn(*lead, n, D, dtype=dtype, device=device, gen=gen)
        key = randn(*lead, n, D, dtype=dtype, device=device, gen=gen)
        value = randn(*lead, D, dtype=dtype, device=device, gen=gen)
        weight = randn(n, D, dtype=torch.float32, device=device, gen=gen, scale=0.5).add(1.0)
        kwargs = {"mask": (torch.rand(*lead, generator=gen) < 0.7).to(device)} if masked else {}
        cases.append(Case(name, (h, key, value, weight), kwargs))
    return cases


def _small_v41_layer():
    """V4.1's shape (orders 2..4 x 8 heads = 24 columns) with small primes: a table of ~2000 rows."""
    return engram_layout([1], 4, 8, 53, V41_COMPRESSED_VOCAB)[0]


@register("engram_hash_lookup", dtypes=(torch.float32, torch.bfloat16, torch.float16))
def engram_hash_lookup_cases(device, dtype, gen):
    layer, tiny = _small_v41_layer(), engram_layout([3], 2, 1, 5, 7)[0]
    args = _hash_args(layer, device)
    R, E = layer.num_rows, 64
    table = randn(R, E, dtype=dtype, device=device, gen=gen)
    ids = randint(0, V41_COMPRESSED_VOCAB, (2, 19), dtype=torch.int64, device=device, gen=gen)
    ids[0, 3:6] = V41_PAD_ID  # pad ids inside the sequence
    history = randint(0, V41_COMPRESSED_VOCAB, (2, 3), dtype=torch.int64, device=device, gen=gen)
    decode = randint(0, V41_COMPRESSED_VOCAB, (3, 1), dtype=torch.int64, device=device, gen=gen)
    # Tiny layout: ids 0..6 over 5 buckets hit every row, the last row of the table included.
    tiny_table = randn(tiny.num_rows, 32, dtype=dtype, device=device, gen=gen)
    tiny_ids = randint(0, 7, (2, 24), dtype=torch.int64, device=device, gen=gen)
    # A -1 offset on a modulus-1 column is a row of -1: zeros, as engram_lookup gives.
    hole_moduli = torch.tensor([[1, 3]], dtype=torch.int64, device=device)
    hole_offsets = torch.tensor([[-1, 0]], dtype=torch.int64, device=device)
    hole_multipliers = tiny.multipliers.to(device)
    fp8 = _fp8_table(R, 256, device=device, gen=gen)
    ue8m0 = randint(112, 130, (R, 256 // 32), dtype=torch.uint8, device=device, gen=gen)
    fp32_scale = torch.rand(R, 256 // 32, generator=gen).add(0.01).to(device)
    return [
        Case("v41-shape-prefill-no-history", (ids, *args, V41_PAD_ID, table)),
        Case("v41-shape-chunk-with-history", (ids, *args, V41_PAD_ID, table, history)),
        Case("v41-shape-decode-s1", (decode, *args, V41_PAD_ID, table, history[:1].expand(3, 3).contiguous())),
        Case("tiny-every-row", (tiny_ids, *_hash_args(tiny, device), 6, tiny_table)),
        Case("minus-one-offset-zeros", (tiny_ids[:1, :5], hole_multipliers, hole_moduli, hole_offsets, 6,
                                        tiny_table[:3])),
        Case("fp8-ue8m0", (ids, *args, V41_PAD_ID, fp8, history), {"scale": ue8m0, "out_dtype": dtype}),
        Case("fp8-fp32-scale", (decode, *args, V41_PAD_ID, fp8), {"scale": fp32_scale, "out_dtype": dtype}),
        Case("fp8-default-bf16", (ids[1:], *args, V41_PAD_ID, fp8), {"scale": ue8m0.view(torch.float8_e8m0fnu)}),
    ]
