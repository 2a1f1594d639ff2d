"""Input cases of the attention family."""

from __future__ import annotations

import torch

from v4_ascend.testing.cases import Case, randint, randn, register, small_ints


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


@register("kv_compress_pool")
def kv_compress_pool_cases(device, dtype, gen):
    cases = []
    # (name, B, S, d, ratio, overlap)
    for name, B, S, d, ratio, overlap in [
        ("csa-b2-remainder", 2, 9, 16, 4, True),
        ("hca-two-blocks-remainder", 1, 263, 8, 128, False),
        ("csa-shorter-than-a-block", 1, 3, 8, 4, True),
        ("csa-flash-width", 1, 8, 512, 4, True),
    ]:
        width = (2 if overlap else 1) * d
        kv = randn(B, S, width, dtype=dtype, device=device, gen=gen)
        score = randn(B, S, width, dtype=dtype, device=device, gen=gen, scale=2.0)
        ape = randn(ratio, width, dtype=torch.float32, device=device, gen=gen)
        cases.append(Case(name, (kv, score, ape, ratio, overlap)))
    return cases


def compressor_state(B, ratio, width, overlap, fresh, *, device, gen):
    """States after some earlier tokens (random rows) or fresh (kv 0, score -inf) per sequence."""
    rows = (2 if overlap else 1) * ratio
    kv_state = randn(B, rows, width, dtype=torch.float32, device="cpu", gen=gen)
    score_state = randn(B, rows, width, dtype=torch.float32, device="cpu", gen=gen)
    for b, is_fresh in enumerate(fresh):
        if is_fresh:
            kv_state[b] = 0.0
            score_state[b] = float("-inf")
    return kv_state.to(device), score_state.to(device)


@register("kv_compress")
def kv_compress_cases(device, dtype, gen):
    cases = []
    # (name, start positions, new tokens per sequence, d, ratio, overlap)
    for name, starts, lens, d, ratio, overlap in [
        ("csa-decode-b3", [3, 7, 0], [1, 1, 1], 16, 4, True),
        ("csa-chunks-mixed", [2, 5, 0], [9, 0, 6], 8, 4, True),
        ("hca-chunk-crossing-block", [120, 0], [140, 5], 8, 128, False),
        ("csa-flash-width-prefill", [0], [8], 512, 4, True),
    ]:
        width = (2 if overlap else 1) * d
        total = sum(lens)
        kv = randn(total, width, dtype=dtype, device=device, gen=gen)
        score = randn(total, width, dtype=dtype, device=device, gen=gen, scale=2.0)
        ape = randn(ratio, width, dtype=torch.float32, device=device, gen=gen)
        kv_state, score_state = compressor_state(
            len(starts), ratio, width, overlap, [s == 0 for s in starts], device=device, gen=gen
        )
        start_pos = torch.tensor(starts, dtype=torch.int32, device=device)
        seq_lens = torch.tensor(lens, dtype=torch.int32, device=device)
        cases.append(Case(name, (kv, score, ape, start_pos, seq_lens, kv_state, score_state, ratio, overlap)))
    return cases


@register("indexer_topk")
def indexer_topk_cases(device, dtype, gen):
    cases = []
    # (name, positions per sequence, H, d, topk): one pool per sequence, concatenated.
    for name, seqs, H, d, topk in [
        ("prefill-one-seq", [list(range(23))], 4, 16, 3),
        ("decode-b3-offsets", [[41], [6], [2]], 4, 16, 8),
        ("flash-heads-topk-wider-than-visible", [[1000, 1201]], 64, 128, 512),
    ]:
        positions = [p for seq in seqs for p in seq]
        entries = [(max(seq) + 1) // 4 + 1 for seq in seqs]
        offsets = [sum(entries[:i]) for i in range(len(seqs))]
        k_offset = torch.tensor([offsets[i] for i, seq in enumerate(seqs) for _ in seq], dtype=torch.int32)
        # Integer-valued inputs: every score is exact whatever the summation order, so the selected rows
        # (compared exactly) cannot differ by the rounding of near-ties; ties exercise the lower-row rule.
        q = small_ints(len(positions), H, d, dtype=dtype, device=device, gen=gen)
        k = small_ints(sum(entries), d, dtype=dtype, device=device, gen=gen)
        weights = small_ints(len(positions), H, dtype=torch.float32, device=device, gen=gen)
        q_pos = torch.tensor(positions, dtype=torch.int32, device=device)
        kwargs = {"k_offset": k_offset.to(device)} if len(seqs) > 1 else {}
        cases.append(Case(name, (q, k, weights, q_pos, 4, topk), kwargs))
    return cases
