"""moe_route cases: V4-Flash's router (256 experts, top-6, route scale 1.5) with a load-balancing bias,
and a hash-routed layer, at decode and prefill token counts, against the reference op called directly.
The rate is GB/s of the logits read (plus weights and indices written) against the copy ceiling."""

from __future__ import annotations

from functools import partial

import torch

from v4_ascend import library
from v4_ascend.bench.harness import Case, Workload
from v4_ascend.ops import moe_route

EXPERTS, TOPK, ROUTE_SCALE, VOCAB = 256, 6, 1.5, 129_280  # V4-Flash


def route(device, *, tokens, hashed):
    logits = torch.randn(tokens, EXPERTS, device=device)
    bias = torch.randn(EXPERTS, device=device) * 0.1
    extra = {}
    if hashed:
        extra = {"token_ids": torch.randint(0, VOCAB, (tokens,), device=device),
                 "tid2eid": torch.randint(0, EXPERTS, (VOCAB, TOPK), dtype=torch.int32, device=device)}
    reference = library.ops()["moe_route"].reference
    return Workload(
        kernel=lambda: moe_route(logits, TOPK, ROUTE_SCALE, bias, **extra),
        baselines={"reference": lambda: reference(logits, TOPK, ROUTE_SCALE, bias, **extra)},
        bytes=float(logits.nbytes + tokens * TOPK * 8),
        note="hash routing: the expert table lookup by token id" if hashed else "biased top-k selection",
    )


def _cases():
    for tokens in (1, 4, 4096):
        yield Case("moe_route", f"flash-b{tokens}" if tokens < 4096 else "flash-prefill-t4096",
                   f"T{tokens} x E{EXPERTS}, top-{TOPK}", torch.float32,
                   partial(route, tokens=tokens, hashed=False), bound="copy", quick=tokens == 4)
    yield Case("moe_route", "flash-hash-b4", f"T4 x E{EXPERTS}, top-{TOPK}, hash table of {VOCAB} tokens",
               torch.float32, partial(route, tokens=4, hashed=True), bound="copy")


CASES = list(_cases())
