"""Input cases of the MoE family."""

from __future__ import annotations

import torch

from v4_ascend.testing.cases import Case, randint, randn, register


def _offsets(counts, device):
    return torch.tensor(counts, dtype=torch.int64).cumsum(0).to(torch.int32).to(device)


@register("grouped_gemm")
def grouped_gemm_cases(device, dtype, gen):
    cases = []
    for name, counts, K, N, pad in [
        ("empty-and-one-row-groups", [3, 0, 1, 0, 5], 32, 24, 0),
        ("unaligned", [17, 33, 1, 7], 72, 40, 0),
        ("trailing-rows-zero", [4, 4], 16, 8, 3),
        ("flash-like-8x64", [64] * 8, 256, 128, 0),
    ]:
        M = sum(counts) + pad
        x = randn(M, K, dtype=dtype, device=device, gen=gen)
        w = randn(len(counts), N, K, dtype=dtype, device=device, gen=gen, scale=K**-0.5)
        cases.append(Case(name, (x, w, _offsets(counts, device))))
    return cases


@register("grouped_gemm_masked")
def grouped_gemm_masked_cases(device, dtype, gen):
    cases = []
    for name, G, Mmax, K, N in [("decode-32x4", 32, 4, 64, 48), ("one-group", 1, 3, 16, 8)]:
        x = randn(G, Mmax, K, dtype=dtype, device=device, gen=gen)
        w = randn(G, N, K, dtype=dtype, device=device, gen=gen, scale=K**-0.5)
        counts = randint(0, Mmax + 1, (G,), device=device, gen=gen)
        cases.append(Case(name, (x, w, counts)))
    return cases
