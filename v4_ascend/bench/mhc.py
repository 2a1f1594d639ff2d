"""mhc_pre / mhc_post cases: V4-Flash's 4 residual streams of hidden 4096 at decode batches, and small
shapes, against the reference op called directly. Both stream the streams once: GB/s against the copy
ceiling (mhc_pre: x and the fp32 projection read, u written; mhc_post: x and f read, the streams written)."""

from __future__ import annotations

from functools import partial

import torch

from v4_ascend import library
from v4_ascend.bench.harness import Case, Workload
from v4_ascend.ops import mhc_post, mhc_pre

STREAMS = 4


def pre(device, *, dtype, tokens, hidden):
    x = torch.randn(tokens, STREAMS, hidden, device=device).to(dtype)
    fn = torch.randn((2 + STREAMS) * STREAMS, STREAMS * hidden, device=device) * (STREAMS * hidden) ** -0.5
    scale = torch.rand(3, device=device) + 0.5
    base = torch.randn((2 + STREAMS) * STREAMS, device=device)
    reference = library.ops()["mhc_pre"].reference
    return Workload(
        kernel=lambda: mhc_pre(x, fn, scale, base),
        baselines={"reference": lambda: reference(x, fn, scale, base)},
        flops=2.0 * tokens * fn.numel(),
        bytes=float(x.nbytes + fn.nbytes + tokens * hidden * x.element_size()),
        note="20 Sinkhorn iterations per token; GB/s counts x and fn read once and u written",
    )


def post(device, *, dtype, tokens, hidden):
    x = torch.randn(tokens, STREAMS, hidden, device=device).to(dtype)
    f = torch.randn(tokens, hidden, device=device).to(dtype)
    weights = torch.rand(tokens, STREAMS, device=device) * 2
    comb = torch.rand(tokens, STREAMS, STREAMS, device=device)
    reference = library.ops()["mhc_post"].reference
    return Workload(
        kernel=lambda: mhc_post(f, x, weights, comb),
        baselines={"reference": lambda: reference(f, x, weights, comb)},
        bytes=float(2 * x.nbytes + f.nbytes),
        note="GB/s counts x and f read once and the streams written",
    )


def _cases():
    for dtype in (torch.float32, torch.bfloat16):
        for op, build in (("mhc_pre", pre), ("mhc_post", post)):
            for tokens in (1, 4):
                yield Case(op, f"flash-decode-b{tokens}", f"T{tokens} x {STREAMS} streams x hidden 4096", dtype,
                           partial(build, dtype=dtype, tokens=tokens, hidden=4096), bound="copy")
            yield Case(op, "prefill-t256-d1024", f"T256 x {STREAMS} streams x 1024", dtype,
                       partial(build, dtype=dtype, tokens=256, hidden=1024), bound="copy",
                       quick=dtype == torch.bfloat16)


CASES = list(_cases())
