"""Input cases of the mHC family: V4 shapes (n = 4, Flash D = 4096) and corner cases."""

from __future__ import annotations

import torch

from v4_ascend.testing.cases import Case, randn, register

# (name, T, n, D): a V4-Flash-like decode batch, a prefill-ish batch, odd sizes, n = 1, and T = 0.
SHAPES = [
    ("flash-decode-t2", 2, 4, 4096),
    ("prefill-t9", 9, 4, 256),
    ("odd-n3-d40", 5, 3, 40),
    ("single-stream", 3, 1, 16),
    ("empty-batch", 0, 4, 32),
]


def _projection(rows, n, D, *, device, gen):
    """``fn`` scaled like a trained projection (mixes of order 1), plus scale and base."""
    fn = randn(rows, n * D, dtype=torch.float32, device=device, gen=gen, scale=(n * D) ** -0.5)
    base = randn(rows, dtype=torch.float32, device=device, gen=gen, scale=0.5)
    return fn, base


@register("mhc_sinkhorn")
def mhc_sinkhorn_cases(device, dtype, gen):
    return [
        Case("v4-t3", (randn(3, 4, 4, dtype=dtype, device=device, gen=gen, scale=2.0), 20, 1e-6)),
        Case("one-iter-n5", (randn(7, 5, 5, dtype=dtype, device=device, gen=gen), 1, 1e-6)),
        Case("large-logits", (randn(2, 4, 4, dtype=dtype, device=device, gen=gen, scale=30.0), 20, 1e-6)),
        Case("n1", (randn(4, 1, 1, dtype=dtype, device=device, gen=gen), 3, 1e-3)),
    ]


@register("mhc_pre")
def mhc_pre_cases(device, dtype, gen):
    cases = []
    for name, T, n, D in SHAPES:
        x = randn(T, n, D, dtype=dtype, device=device, gen=gen)
        fn, base = _projection((2 + n) * n, n, D, device=device, gen=gen)
        scale = randn(3, dtype=torch.float32, device=device, gen=gen).abs() + 0.1
        cases.append(Case(name, (x, fn, scale, base, 20, 1e-6, 1e-6)))
    return cases


@register("mhc_post")
def mhc_post_cases(device, dtype, gen):
    cases = []
    for name, T, n, D in SHAPES:
        f = randn(T, D, dtype=dtype, device=device, gen=gen)
        x = randn(T, n, D, dtype=dtype, device=device, gen=gen)
        post = 2 * torch.rand(T, n, generator=gen).to(device)
        comb = torch.softmax(randn(T, n, n, dtype=torch.float32, device="cpu", gen=gen), dim=-1).to(device)
        cases.append(Case(name, (f, x, post, comb)))
    return cases


@register("mhc_head")
def mhc_head_cases(device, dtype, gen):
    cases = []
    for name, T, n, D in SHAPES:
        x = randn(T, n, D, dtype=dtype, device=device, gen=gen)
        fn, base = _projection(n, n, D, device=device, gen=gen)
        scale = randn(1, dtype=torch.float32, device=device, gen=gen).abs() + 0.1
        cases.append(Case(name, (x, fn, scale, base, 1e-6, 1e-6)))
    return cases
