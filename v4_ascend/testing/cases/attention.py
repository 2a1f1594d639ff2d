"""Input cases of the attention family."""

from __future__ import annotations

import torch

from v4_ascend.testing.cases import Case, randint, randn, register


def _idx_with_holes(T, K, N, *, device, gen, hole_fraction=0.25):
    idx = randint(0, max(N, 1), (T, K), device="cpu", gen=gen)
    holes = torch.rand(T, K, generator=gen) < hole_fraction
    return idx.masked_fill(holes | (N == 0), -1).to(device)


@register("sparse_attn")
def sparse_attn_cases(device, dtype, gen):
    cases = []
    # (name, T, H, D, N, K, N2, K2, with lengths)
    shapes = [
        ("decode-t1-window", 1, 8, 64, 128, 128, 0, 0, False),
        ("flash-like-csa-b2", 2, 64, 512, 256, 128, 512, 64, True),
        ("prefill-two-scopes", 17, 4, 96, 40, 16, 9, 5, False),
        ("heads-3-odd-d", 5, 3, 40, 7, 6, 0, 0, True),
    ]
    for name, T, H, D, N, K, N2, K2, lengths in shapes:
        q = randn(T, H, D, dtype=dtype, device=device, gen=gen)
        kv = randn(N, D, dtype=dtype, device=device, gen=gen)
        idx = _idx_with_holes(T, K, N, device=device, gen=gen)
        idx[0, 0] = N - 1  # an index at the very end of the pool
        sink = randn(H, dtype=torch.float32, device=device, gen=gen)
        kwargs = {}
        if N2:
            kwargs["extra_kv"] = randn(N2, D, dtype=dtype, device=device, gen=gen)
            kwargs["extra_idx"] = _idx_with_holes(T, K2, N2, device=device, gen=gen)
        if lengths:
            kwargs["topk_length"] = randint(0, K + 1, (T,), device=device, gen=gen)
            if N2:
                kwargs["extra_topk_length"] = randint(0, K2 + 1, (T,), device=device, gen=gen)
        cases.append(Case(name, (q, kv, idx, sink, D**-0.5), kwargs))
    # A row with no valid slot at all (out = 0, lse = -inf), and no sink.
    q = randn(3, 2, 16, dtype=dtype, device=device, gen=gen)
    kv = randn(4, 16, dtype=dtype, device=device, gen=gen)
    idx = torch.tensor([[0, 3, -1], [-1, -1, -1], [2, -1, 1]], dtype=torch.int32, device=device)
    cases.append(Case("empty-row-no-sink", (q, kv, idx, None, 0.25)))
    return cases
