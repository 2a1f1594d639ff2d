"""kv_compress cases: the stateful compressor over a V4-Flash prefill (CSA r 4 with overlap, HCA r 128)
and a batch of decodes, against the reference op called directly. The op streams its fp32 inputs once,
so the rate is GB/s against the copy ceiling (bytes: kv and score read, entries written)."""

from __future__ import annotations

from functools import partial

import torch

from v4_ascend import library
from v4_ascend.bench.harness import Case, Workload
from v4_ascend.ops import kv_compress

DIM = 512  # V4-Flash compressed entry width


def compress(device, *, ratio, overlap, batch, new_tokens, start):
    """`batch` sequences of `new_tokens` tokens each, starting at position `start`; every call starts
    from freshly reset state (kernel and reference alike), so each call emits the same entries."""
    width = (2 if overlap else 1) * DIM
    rows = batch * new_tokens
    kv = torch.randn(rows, width, device=device)
    score = torch.randn(rows, width, device=device)
    ape = torch.randn(ratio, width, device=device)
    start_pos = torch.full((batch,), start, dtype=torch.int32, device=device)
    seq_lens = torch.full((batch,), new_tokens, dtype=torch.int32, device=device)
    state_rows = (2 if overlap else 1) * ratio
    reference = library.ops()["kv_compress"].reference

    def with_fresh_state(fn):
        kv_state = torch.zeros(batch, state_rows, width, device=device)
        score_state = torch.full((batch, state_rows, width), float("-inf"), device=device)

        def call():
            kv_state.zero_()
            score_state.fill_(float("-inf"))
            return fn(kv, score, ape, start_pos, seq_lens, kv_state, score_state, ratio, overlap)

        return call

    entries = batch * ((start + new_tokens) // ratio - start // ratio)
    return Workload(
        kernel=with_fresh_state(kv_compress),
        baselines={"reference": with_fresh_state(reference)},
        bytes=float(kv.nbytes + score.nbytes + entries * DIM * 4),
        note="state reset inside every timed call (both sides); GB/s counts kv + score read once and the entries "
        "written",
    )


def _cases():
    s = 4096
    yield Case("kv_compress", "flash-csa-prefill-s4096", f"S{s}, 2 x D{DIM}, r 4, overlap", torch.float32,
               partial(compress, ratio=4, overlap=True, batch=1, new_tokens=s, start=0), bound="copy")
    yield Case("kv_compress", "flash-hca-prefill-s4096", f"S{s}, D{DIM}, r 128", torch.float32,
               partial(compress, ratio=128, overlap=False, batch=1, new_tokens=s, start=0), bound="copy")
    yield Case("kv_compress", "csa-prefill-s256", f"S256, 2 x D{DIM}, r 4, overlap", torch.float32,
               partial(compress, ratio=4, overlap=True, batch=1, new_tokens=256, start=0), bound="copy", quick=True)
    yield Case("kv_compress", "flash-csa-decode-b4", f"4 sequences x 1 token at position 1023, 2 x D{DIM}, r 4",
               torch.float32, partial(compress, ratio=4, overlap=True, batch=4, new_tokens=1, start=1023), bound="copy")


CASES = list(_cases())
