"""Every C++ kernel gives bit-identical results on 1 and 2 threads (the rest of the suite runs on one thread,
so this is what exercises the work splitting: query chunks, (sequence, block) items, position ranges)."""

from __future__ import annotations

import pytest
import torch

from v4_ascend.ops.engram_layout import engram_layout


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def indexer_args():
    T, H, d, N = 45, 4, 16, 400
    k_offset = torch.randint(0, N // 2, (T,), dtype=torch.int32)
    return (torch.randint(-3, 4, (T, H, d)).float(), torch.randint(-3, 4, (N, d)).float(),
            torch.randint(-3, 4, (T, H)).float(), torch.randint(0, 4 * (N // 2), (T,), dtype=torch.int32), 4, 32,
            k_offset)


def kv_compress_args():
    starts, lens, width, ratio = [0, 5, 2], [300, 0, 161], 32, 4
    kv_state = torch.randn(3, 2 * ratio, width)
    score_state = torch.randn(3, 2 * ratio, width)
    kv_state[0], score_state[0] = 0.0, float("-inf")
    return (torch.randn(sum(lens), width), torch.randn(sum(lens), width), torch.randn(ratio, width),
            torch.tensor(starts, dtype=torch.int32), torch.tensor(lens, dtype=torch.int32), kv_state, score_state,
            ratio, True)


def engram_hash_args():
    layer = engram_layout([1, 14], 4, 8, 16_000_000, 99_092)[0]
    return (torch.randint(0, 99_092, (3, 700)), layer.multipliers, layer.moduli, layer.offsets, 2,
            torch.randint(0, 99_092, (3, 3)))


def engram_lookup_args():
    fp8 = torch.randint(0, 256, (500, 64), dtype=torch.uint8)
    fp8[(fp8 & 0x7F) == 0x7F] = 0
    rows = torch.randint(-1, 500, (300, 6))
    return (fp8.view(torch.float8_e4m3fn), rows, torch.randint(110, 140, (500, 2), dtype=torch.uint8), None)


def mhc_pre_args():
    n, D = 4, 64
    return (torch.randn(37, n, D), torch.randn(24, n * D) * 0.06, torch.rand(3) + 0.1, torch.randn(24), 20, 1e-6,
            1e-6)


def mhc_post_args():
    T, n, D = 300, 4, 48
    return (torch.randn(T, D), torch.randn(T, n, D), torch.rand(T, n), torch.softmax(torch.randn(T, n, n), -1))


def grouped_gemm_masked_args():
    counts = [3, 0, 16, 257, 1] * 2  # small-M work items (group, weight-row block) and ATen mm groups
    return (torch.randn(len(counts), 257, 70), torch.randn(len(counts), 131, 70),
            torch.tensor(counts, dtype=torch.int32))


def grouped_gemm_args():
    counts = [2, 0, 40, 5, 8] * 3
    return (torch.randn(sum(counts), 37).bfloat16(), torch.randn(len(counts), 131, 37).bfloat16(),
            torch.tensor(counts, dtype=torch.int32).cumsum(0, dtype=torch.int32))


def moe_route_args():
    return (3 * torch.randn(300, 64), 6, 1.5, 0.1 * torch.randn(64))


CASES = {
    "indexer_topk": indexer_args,
    "kv_compress": kv_compress_args,
    "engram_hash": engram_hash_args,
    "engram_lookup": engram_lookup_args,
    "mhc_pre": mhc_pre_args,
    "mhc_post": mhc_post_args,
    "moe_route": moe_route_args,
    "grouped_gemm_masked": grouped_gemm_masked_args,
    "grouped_gemm": grouped_gemm_args,
}


def clone(args):
    return [a.clone() if isinstance(a, torch.Tensor) else a for a in args]


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("op", sorted(CASES))
def test_two_threads_match_one_thread_bit_for_bit(served_by_cpp, two_threads, op):
    args = CASES[op]()
    kernel = getattr(torch.ops.v4_ascend, op)
    torch.set_num_threads(1)
    single_args = clone(args)
    with served_by_cpp(op):
        single = as_tuple(kernel(*single_args))
    torch.set_num_threads(2)
    multi_args = clone(args)
    with served_by_cpp(op):
        multi = as_tuple(kernel(*multi_args))
    for a, b in zip(single + tuple(single_args), multi + tuple(multi_args)):  # outputs, then mutated inputs
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
