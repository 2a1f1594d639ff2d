"""indexer_topk: bit-exact against a NumPy loop on exactly representable data; chunking; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from v4_ascend.ops import indexer_topk
from v4_ascend.reference import attention as ref


def numpy_topk(q, k, w, q_pos, ratio, topk, k_offset=None):
    """Per query: explicit score list over visible entries, sorted by (-score, index)."""
    q, k, w = q.double().numpy(), k.double().numpy(), w.double().numpy()
    out = np.full((q.shape[0], topk), -1, dtype=np.int64)
    for t in range(q.shape[0]):
        base = 0 if k_offset is None else int(k_offset[t])
        visible = (int(q_pos[t]) + 1) // ratio
        scored = []
        for i in range(visible):
            score = sum(w[t, h] * max(0.0, float(q[t, h] @ k[base + i])) for h in range(q.shape[1]))
            scored.append((-score, i))
        picks = [base + i for _, i in sorted(scored)[:topk]]
        out[t, : len(picks)] = picks
    return torch.from_numpy(out).to(torch.int32)


def small_ints(*shape, low=-3, high=4):
    """Integer-valued floats: every score is exact, so ties are real ties and order is bit-exact."""
    return torch.randint(low, high, shape).to(torch.float32)


@pytest.mark.parametrize("T,H,d,ratio,topk", [(40, 3, 8, 4, 5), (12, 2, 4, 4, 64), (30, 4, 16, 3, 1)])
def test_bit_exact_against_numpy_loop_with_ties(T, H, d, ratio, topk):
    q_pos = torch.randperm(T * 2)[:T].to(torch.int32)
    n = (int(q_pos.max()) + 1) // ratio
    q, k, w = small_ints(T, H, d), small_ints(n, d), small_ints(T, H, low=-2, high=3)
    got = indexer_topk(q, k, w, q_pos, ratio, topk)
    assert got.dtype == torch.int32 and got.shape == (T, topk)
    assert torch.equal(got, numpy_topk(q, k, w, q_pos, ratio, topk))


def test_random_floats_fp64_and_fp32_pick_the_same_top_set():
    T, H, d, topk = 16, 4, 32, 6
    q_pos = torch.arange(100, 100 + T, dtype=torch.int32)
    q, k, w = torch.randn(T, H, d, dtype=torch.float64), torch.randn(29, d, dtype=torch.float64), torch.randn(T, H)
    want = numpy_topk(q, k, w, q_pos, 4, topk)
    assert torch.equal(indexer_topk(q, k, w.double(), q_pos, 4, topk), want)
    assert torch.equal(indexer_topk(q.float(), k.float(), w, q_pos, 4, topk).sort(1).values, want.sort(1).values)


def test_batched_pool_with_offsets():
    H, d, topk = 2, 8, 4
    seq_pos = [[0, 1, 2, 3, 9, 17], [5, 6], [30]]
    entries = [(max(p) + 1) // 4 for p in seq_pos]
    offsets = np.cumsum([0] + entries[:-1])
    q_pos = torch.tensor([p for s in seq_pos for p in s], dtype=torch.int32)
    k_offset = torch.tensor([int(offsets[i]) for i, s in enumerate(seq_pos) for _ in s], dtype=torch.int32)
    q, k, w = small_ints(len(q_pos), H, d), small_ints(sum(entries), d), small_ints(len(q_pos), H, low=0, high=3)
    got = indexer_topk(q, k, w, q_pos, 4, topk, k_offset)
    assert torch.equal(got, numpy_topk(q, k, w, q_pos, 4, topk, k_offset))
    for t in range(len(q_pos)):  # picks stay inside the query's own sequence, and are visible
        valid = got[t][got[t] >= 0]
        assert ((valid >= k_offset[t]) & (valid < k_offset[t] + (q_pos[t] + 1) // 4)).all()


def test_score_blocks_stay_bounded_and_chunking_does_not_change_picks(monkeypatch):
    """The reference's own chunking, so it is called directly (the C++ kernel serves the op on CPU)."""
    T, H, d, N = 50, 4, 8, 60
    q_pos = torch.arange(190, 190 + T, dtype=torch.int32)
    q, k, w = small_ints(T, H, d), small_ints(N, d), small_ints(T, H)
    whole = ref.indexer_topk(q, k, w, q_pos, 4, 7)
    largest = []
    real_scores = ref._indexer_scores

    def recording(q_chunk, keys, weights, acc):
        scores = real_scores(q_chunk, keys, weights, acc)
        largest.append(scores.numel())
        return scores

    monkeypatch.setattr(ref, "_SCORE_BUDGET", 128)
    monkeypatch.setattr(ref, "_indexer_scores", recording)
    assert torch.equal(ref.indexer_topk(q, k, w, q_pos, 4, 7), whole)
    assert len(largest) > 1 and max(largest) <= 128


def test_queries_that_see_nothing_get_only_padding():
    q, k, w = torch.randn(3, 2, 4), torch.randn(2, 4), torch.randn(3, 2)
    got = indexer_topk(q, k, w, torch.tensor([0, 2, 7], dtype=torch.int32), 4, 3)
    assert got[:2].eq(-1).all() and got[2, 2] == -1 and sorted(got[2, :2].tolist()) == [0, 1]


def test_errors_name_the_argument():
    q, k, w = torch.randn(2, 2, 4), torch.randn(3, 4), torch.randn(2, 2)
    pos = torch.tensor([3, 11], dtype=torch.int32)
    with pytest.raises(ValueError, match="'k_offset' \\+ visible entries"):
        indexer_topk(q, k, w, pos + 4, 4, 2)
    with pytest.raises(ValueError, match="'q_pos' values must be >= 0"):
        indexer_topk(q, k, w, pos - 4, 4, 2)
    with pytest.raises(ValueError, match="'q_pos' must be int32"):
        indexer_topk(q, k, w, pos.long(), 4, 2)
    with pytest.raises(ValueError, match="'k' must be 2-D"):
        indexer_topk(q, k[None], w, pos, 4, 2)
    with pytest.raises(ValueError, match="'weights' must be of shape"):
        indexer_topk(q, k, w[:, :1], pos, 4, 2)
    with pytest.raises(ValueError, match="'topk' must be a positive int"):
        indexer_topk(q, k, w, pos, 4, 0)
