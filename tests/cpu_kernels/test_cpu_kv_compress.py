"""C++ kv_compress vs the reference.

Positions, sequence ids and the updated states are compared bit for bit (the state holds copies and
``score + ape`` computed as the reference does). Entries are compared with the per-dtype tolerance: the
kernel's fp32 softmax uses its own vectorised exp and sums candidates in its own order, so entries differ
from torch's by a few ulp; fp64 uses std::exp and is held to the fp64 tolerance.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v4_ascend.reference import attention as ref
from v4_ascend.testing.tolerance import assert_close


def make_call(starts, lens, d, ratio, overlap, dtype=torch.float32, fresh=None, logit_scale=2.0):
    width = (2 if overlap else 1) * d
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    total = sum(lens)
    kv = torch.randn(total, width, dtype=acc).to(dtype)
    score = (logit_scale * torch.randn(total, width, dtype=acc)).to(dtype)
    ape = torch.randn(ratio, width)
    rows = (2 if overlap else 1) * ratio
    kv_state = torch.randn(len(starts), rows, width, dtype=acc)
    score_state = torch.randn(len(starts), rows, width, dtype=acc)
    for b, is_fresh in enumerate(fresh or [s == 0 for s in starts]):
        if is_fresh:
            kv_state[b], score_state[b] = 0.0, float("-inf")
    return [kv, score, ape, torch.tensor(starts, dtype=torch.int32), torch.tensor(lens, dtype=torch.int32),
            kv_state, score_state, ratio, overlap]


def compress_both(served_by_cpp, args, reference_dtype=None):
    mine = list(args)
    theirs = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    if reference_dtype is not None:
        theirs[0], theirs[1] = theirs[0].to(reference_dtype), theirs[1].to(reference_dtype)
    with served_by_cpp("kv_compress"):
        got = torch.ops.v4_ascend.kv_compress(*mine)
    want = ref.kv_compress(*theirs)
    return got, want, mine, theirs


def assert_same(got, want, mine, theirs, dtype):
    (entries, positions, seq), (want_entries, want_positions, want_seq) = got, want
    assert entries.dtype == want_entries.dtype and entries.shape == want_entries.shape
    assert_close(entries, want_entries, dtype, "entries")
    assert torch.equal(positions, want_positions) and torch.equal(seq, want_seq)
    assert torch.equal(mine[5], theirs[5]) and torch.equal(mine[6], theirs[6])  # kv_state, score_state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("starts", "lens", "d", "ratio", "overlap"), [
    ([3, 7, 0], [1, 1, 1], 16, 4, True),  # CSA decode
    ([2, 5, 0, 9], [9, 0, 6, 3], 8, 4, True),  # mixed chunks, an empty sequence
    ([120, 0], [140, 5], 8, 128, False),  # HCA, chunk crossing a block
    ([0], [8], 512, 4, True),  # Flash width, channel tiles
    ([0, 1], [5, 4], 70, 1, False),  # ratio 1: every token is an entry; channel tail
    ([1], [9], 3, 2, True),
])
def test_matches_reference(served_by_cpp, dtype, starts, lens, d, ratio, overlap):
    args = make_call(starts, lens, d, ratio, overlap, dtype)
    assert_same(*compress_both(served_by_cpp, args), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_matches_fp32_reference_on_same_values(served_by_cpp, dtype):
    args = make_call([0, 6], [13, 7], 16, 4, True, dtype)
    assert_same(*compress_both(served_by_cpp, args, reference_dtype=torch.float32), torch.float32)


def test_widely_spread_logits_and_fresh_state(served_by_cpp):
    """Logits 60 apart underflow the exp (weights exactly 0); -inf state candidates weigh nothing."""
    args = make_call([0, 0], [12, 9], 32, 4, True, logit_scale=60.0)
    assert_same(*compress_both(served_by_cpp, args), torch.float32)


def test_no_entries_and_no_rows(served_by_cpp):
    args = make_call([1, 5], [2, 0], 8, 4, False)
    got, want, mine, theirs = compress_both(served_by_cpp, args)
    assert got[0].shape == want[0].shape == (0, 8)
    assert_same(got, want, mine, theirs, torch.float32)
    got, want, mine, theirs = compress_both(served_by_cpp, make_call([3], [0], 8, 4, True))
    assert got[0].shape == (0, 8) and torch.equal(mine[5], theirs[5])


def test_non_contiguous_inputs_and_state(served_by_cpp):
    """kv/score/ape are copied to contiguous; a strided state is updated in place through a copy-back."""
    args = make_call([2, 0], [7, 5], 8, 4, True)
    args[0] = torch.stack([args[0], args[0]], dim=-1)[..., 0]
    args[1] = args[1].t().contiguous().t()
    for i in (5, 6):
        args[i] = torch.stack([args[i], args[i]], dim=-1)[..., 0]
    assert not (args[0].is_contiguous() or args[1].is_contiguous() or args[5].is_contiguous())
    storage = args[5].data_ptr()
    got, want, mine, theirs = compress_both(served_by_cpp, args)
    assert_same(got, want, mine, theirs, torch.float32)
    assert mine[5].data_ptr() == storage


@pytest.mark.parametrize(("index", "value", "arg"), [
    (3, torch.tensor([-1], dtype=torch.int32), "start_pos"),
    (4, torch.tensor([4], dtype=torch.int32), "seq_lens"),
    (4, torch.tensor([-1], dtype=torch.int32), "seq_lens"),
    (5, torch.zeros(1, 8, 8, dtype=torch.float64), "kv_state"),
    (6, torch.zeros(1, 4, 8), "score_state"),
    (2, torch.zeros(3, 8), "ape"),
    (0, torch.zeros(5, 8, dtype=torch.int32), "kv"),
])
def test_bad_arguments_name_the_argument(served_by_cpp, index, value, arg):
    args = make_call([0], [5], 4, 4, True)
    args[index] = value
    with served_by_cpp("kv_compress", calls=0), pytest.raises(ValueError, match=f"kv_compress: '{arg}'"):
        torch.ops.v4_ascend.kv_compress(*args)


def test_odd_width_with_overlap_names_kv(served_by_cpp):
    args = make_call([0], [5], 4, 4, False)
    args[0], args[1], args[2] = args[0][:, :3], args[1][:, :3], args[2][:, :3]
    args[5], args[6] = args[5][:, :, :3].repeat(1, 2, 1), args[6][:, :, :3].repeat(1, 2, 1)
    args[8] = True
    with served_by_cpp("kv_compress", calls=0), pytest.raises(ValueError, match="kv_compress: 'kv' must be an even"):
        torch.ops.v4_ascend.kv_compress(*args)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ratio=st.integers(1, 6), overlap=st.booleans(), d=st.integers(1, 9),
       seqs=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 14), st.booleans()), min_size=1, max_size=3))
def test_property_matches_reference(served_by_cpp, ratio, overlap, d, seqs):
    starts, lens, fresh = (list(x) for x in zip(*seqs))
    args = make_call(starts, lens, d, ratio, overlap, fresh=fresh)
    assert_same(*compress_both(served_by_cpp, args), torch.float32)


def split_sizes(total, ratio):
    """Chunk sizes covering `total` tokens: single-token decode steps and chunks that end inside blocks."""
    pattern, sizes = [1, ratio - 1, ratio + 3, 1, 2 * ratio + 1], []
    while sum(sizes) < total:
        sizes.append(min(pattern[len(sizes) % len(pattern)], total - sum(sizes)))
    return sizes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("ratio", "overlap", "total"), [(4, True, 45), (128, False, 300), (4, False, 30)])
def test_split_calls_equal_one_call_bit_for_bit(served_by_cpp, dtype, ratio, overlap, total):
    """An entry whose candidates are all new rows is pooled straight from the inputs (in their dtype), one with
    candidates in the state from its widened copies: the same numbers, so prefill then decode steps give the
    entries of one call bit for bit, and those match the fp32 reference on the same values. d 70: a 64-channel
    tile and a 6-lane tail."""
    d, width = 70, (2 if overlap else 1) * 70
    args = make_call([0], [total], d, ratio, overlap, dtype)
    kv, score, ape = args[0], args[1], args[2]
    got, want, _, _ = compress_both(served_by_cpp, args, reference_dtype=torch.float32)
    assert_close(got[0], want[0], torch.float32, "entries")
    rows = (2 if overlap else 1) * ratio
    kv_state, score_state = torch.zeros(1, rows, width), torch.full((1, rows, width), float("-inf"))
    pieces, start = [], 0
    for size in split_sizes(total, ratio):
        call = [kv[start:start + size], score[start:start + size], ape, torch.tensor([start], dtype=torch.int32),
                torch.tensor([size], dtype=torch.int32), kv_state, score_state, ratio, overlap]
        with served_by_cpp("kv_compress"):
            pieces.append(torch.ops.v4_ascend.kv_compress(*call)[0])
        start += size
    assert torch.equal(torch.cat(pieces), got[0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_non_contiguous_low_precision_inputs(served_by_cpp, dtype):
    args = make_call([0, 3], [70, 9], 24, 4, True, dtype)
    args[0] = torch.stack([args[0], args[0]], dim=-1)[..., 1]
    args[1] = args[1].t().contiguous().t()
    assert not (args[0].is_contiguous() or args[1].is_contiguous())
    assert_same(*compress_both(served_by_cpp, args, reference_dtype=torch.float32), torch.float32)


@pytest.mark.parametrize(("ratio", "overlap"), [(4, True), (128, False)])
def test_state_blocks_on_two_threads(served_by_cpp, ratio, overlap):
    """Each thread sizes its widened block copies on its first block that involves the state: sequences that
    start mid-block, after a from-zero one, spread over two threads, match the reference."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        args = make_call([0, ratio + 1, 2 * ratio - 1, 3], [3 * ratio, ratio + 2, 2 * ratio, 2 * ratio], 24, ratio,
                         overlap)
        assert_same(*compress_both(served_by_cpp, args), torch.float32)
    finally:
        torch.set_num_threads(threads)
