"""KV compressor: pooling against a NumPy per-entry loop; stateful chunking is bit-exact; gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from v4_ascend.ops import kv_compress, kv_compress_pool
from v4_ascend.reference import attention as ref
from v4_ascend.testing.tolerance import assert_close


def numpy_pool(kv, score, ape, ratio, overlap):
    """Entry i from its explicit candidate list: (token, feature offset) pairs, softmax per channel, fp64."""
    kv, score, ape = kv.double().numpy(), score.double().numpy(), ape.double().numpy()
    S, F = kv.shape
    d = F // 2 if overlap else F
    entries = []
    for i in range(S // ratio):
        candidates = [(j, d) for j in range(i * ratio, (i + 1) * ratio)] if overlap else \
            [(j, 0) for j in range(i * ratio, (i + 1) * ratio)]
        if overlap and i > 0:
            candidates += [(j, 0) for j in range((i - 1) * ratio, i * ratio)]
        entry = np.zeros(d)
        for f in range(d):
            logits = np.array([score[j, off + f] + ape[j % ratio, off + f] for j, off in candidates])
            values = np.array([kv[j, off + f] for j, off in candidates])
            p = np.exp(logits - logits.max())
            entry[f] = (p / p.sum()) @ values
        entries.append(entry)
    return torch.from_numpy(np.array(entries).reshape(-1, d))


def fresh_state(B, ratio, width, overlap, dtype=torch.float32):
    rows = (2 if overlap else 1) * ratio
    return torch.zeros(B, rows, width, dtype=dtype), torch.full((B, rows, width), float("-inf"), dtype=dtype)


@pytest.mark.parametrize(
    "S,d,ratio,overlap", [(19, 6, 4, True), (3, 4, 4, True), (300, 5, 128, False), (9, 3, 2, False)]
)
def test_pool_matches_numpy_loop(S, d, ratio, overlap):
    width = (2 if overlap else 1) * d
    kv, score = torch.randn(2, S, width), 3 * torch.randn(2, S, width)
    ape = torch.randn(ratio, width)
    out = kv_compress_pool(kv, score, ape, ratio, overlap)
    assert out.shape == (2, S // ratio, d) and out.dtype == torch.float32
    for b in range(2):
        torch.testing.assert_close(out[b].double(), numpy_pool(kv[b], score[b], ape, ratio, overlap),
                                   atol=2e-6, rtol=2e-6)


def _split_points(rng, total, ratio):
    """Chunk sizes covering [0, total): single-token decode steps, chunks crossing blocks, empty chunks."""
    sizes, done = [], 0
    while done < total:
        size = int(rng.choice([0, 1, 1, 2, ratio - 1, ratio + 3, 2 * ratio + 1]))
        size = min(size, total - done)
        sizes.append(size)
        done += size
    return sizes


@pytest.mark.parametrize("compress", [ref.kv_compress, kv_compress], ids=["reference", "serving-kernel"])
@pytest.mark.parametrize("ratio,overlap,total", [(4, True, 37), (128, False, 300), (4, True, 3), (128, False, 100)])
def test_chunked_prefill_and_decode_are_bit_exact(compress, ratio, overlap, total, seed):
    """Any split gives the entries of one whole call bit for bit; the reference equals the stateless pool
    exactly, a C++ kernel (its own exp and sum order) within the fp32 tolerance."""
    d = 8
    width = (2 if overlap else 1) * d
    kv, score = torch.randn(total, width), 2 * torch.randn(total, width)
    ape = torch.randn(ratio, width)
    pool = kv_compress_pool(kv[None], score[None], ape, ratio, overlap)[0]
    whole = compress(kv, score, ape, torch.tensor([0], dtype=torch.int32), torch.tensor([total], dtype=torch.int32),
                     *fresh_state(1, ratio, width, overlap), ratio, overlap)[0]
    if compress is ref.kv_compress:
        assert torch.equal(whole, pool)
    assert_close(whole, pool, torch.float32)
    sizes = _split_points(np.random.default_rng(seed), total, ratio)
    kv_state, score_state = fresh_state(1, ratio, width, overlap)
    got, positions, start = [], [], 0
    for size in sizes:
        entries, pos, seq = compress(
            kv[start:start + size], score[start:start + size], ape, torch.tensor([start], dtype=torch.int32),
            torch.tensor([size], dtype=torch.int32), kv_state, score_state, ratio, overlap,
        )
        assert entries.shape[0] == (start + size) // ratio - start // ratio and (seq == 0).all()
        got.append(entries)
        positions.append(pos)
        start += size
    assert torch.equal(torch.cat(got), whole), f"chunks {sizes}"
    assert torch.equal(torch.cat(positions), torch.arange(total // ratio, dtype=torch.int32) * ratio)


def test_batched_sequences_equal_separate_calls():
    ratio, d = 4, 6
    width = 2 * d
    starts, lens = [0, 5, 10, 3], [7, 0, 6, 1]
    kv, score, ape = torch.randn(sum(lens), width), torch.randn(sum(lens), width), torch.randn(ratio, width)
    kv_state = torch.randn(4, 2 * ratio, width)
    score_state = torch.randn(4, 2 * ratio, width)
    kv_state[0], score_state[0] = 0.0, float("-inf")
    separate_states = (kv_state.clone(), score_state.clone())
    entries, pos, seq = kv_compress(kv, score, ape, torch.tensor(starts, dtype=torch.int32),
                                    torch.tensor(lens, dtype=torch.int32), kv_state, score_state, ratio, True)
    want_entries, want_pos, want_seq, row = [], [], [], 0
    for b, (P, L) in enumerate(zip(starts, lens)):
        e, p, _ = kv_compress(kv[row:row + L], score[row:row + L], ape, torch.tensor([P], dtype=torch.int32),
                              torch.tensor([L], dtype=torch.int32), separate_states[0][b:b + 1],
                              separate_states[1][b:b + 1], ratio, True)
        row += L
        want_entries.append(e)
        want_pos.append(p)
        want_seq.append(torch.full_like(p, b))
    assert torch.equal(entries, torch.cat(want_entries))
    assert torch.equal(pos, torch.cat(want_pos)) and torch.equal(seq, torch.cat(want_seq))
    assert seq.tolist() == [0, 2, 2, 3] and pos.tolist() == [0, 8, 12, 0]
    assert torch.equal(kv_state, separate_states[0]) and torch.equal(score_state, separate_states[1])


def test_state_is_mutated_in_place_and_holds_biased_logits():
    ratio, width = 4, 4
    kv, score, ape = torch.randn(6, width), torch.randn(6, width), torch.randn(ratio, width)
    kv_state, score_state = fresh_state(1, ratio, width, True)
    ptr = kv_state.data_ptr()
    kv_compress(kv, score, ape, torch.tensor([0], dtype=torch.int32), torch.tensor([6], dtype=torch.int32),
                kv_state, score_state, ratio, True)
    assert kv_state.data_ptr() == ptr
    # previous complete block = tokens 0..3, current partial block = tokens 4, 5 at rows ratio + p % ratio
    assert torch.equal(kv_state[0, :4], kv[:4]) and torch.equal(kv_state[0, 4:6], kv[4:6])
    torch.testing.assert_close(score_state[0, :4], score[:4] + ape)
    torch.testing.assert_close(score_state[0, 4:6], score[4:6] + ape[:2])


@pytest.mark.parametrize("ratio,overlap,S", [(4, True, 10), (3, False, 7)])
def test_gradcheck_pool_fp64(ratio, overlap, S):
    width = 6 if overlap else 3
    args = [torch.randn(2, S, width, dtype=torch.float64, requires_grad=True),
            torch.randn(2, S, width, dtype=torch.float64, requires_grad=True),
            torch.randn(ratio, width, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(lambda kv, s, a: kv_compress_pool(kv, s, a, ratio, overlap), args)


def test_errors_name_the_argument():
    kv, score, ape = torch.randn(5, 8), torch.randn(5, 8), torch.randn(4, 8)
    kv_state, score_state = fresh_state(1, 4, 8, True)
    one, five = torch.tensor([0], dtype=torch.int32), torch.tensor([5], dtype=torch.int32)
    with pytest.raises(ValueError, match="'seq_lens' must be >= 0 and sum to 5"):
        kv_compress(kv, score, ape, one, one, kv_state, score_state, 4, True)
    with pytest.raises(ValueError, match="'kv_state' must be float32"):
        kv_compress(kv, score, ape, one, five, kv_state.double(), score_state, 4, True)
    with pytest.raises(ValueError, match="'score_state' must be of shape"):
        kv_compress(kv, score, ape, one, five, kv_state, score_state[:, :4], 4, True)
    with pytest.raises(ValueError, match="'start_pos' values must be >= 0"):
        kv_compress(kv, score, ape, one - 1, five, kv_state, score_state, 4, True)
    with pytest.raises(ValueError, match="'start_pos' must be int32"):
        kv_compress(kv, score, ape, one.long(), five, kv_state, score_state, 4, True)
    with pytest.raises(ValueError, match="'ape' must be of shape"):
        kv_compress_pool(kv[None], score[None], ape[:3], 4, True)
    with pytest.raises(ValueError, match="'kv' must be an even last dim"):
        kv_compress_pool(kv[None, :, :7], score[None, :, :7], ape[:, :7], 4, True)
    with pytest.raises(ValueError, match="'ratio' must be a positive int"):
        kv_compress_pool(kv[None], score[None], ape, 0, True)
