"""grouped_gemm cases: prefill groups against a loop of mm and a dense mm over the same rows (GFLOP/s),
and masked decode against a loop of mm and a bmm (GB/s of weight streaming)."""

from __future__ import annotations

from functools import partial

import torch

from v4_ascend.bench.harness import Case, Workload
from v4_ascend.ops import grouped_gemm, grouped_gemm_masked


def prefill(device, *, dtype, experts, rows, k, n):
    x = torch.randn(experts * rows, k, device=device).to(dtype)
    w = torch.randn(experts, n, k, device=device).to(dtype) * k**-0.5
    offsets = torch.arange(1, experts + 1, dtype=torch.int32, device=device) * rows

    def loop_of_mm():
        return torch.cat([x[g * rows:(g + 1) * rows] @ w[g].t() for g in range(experts)])

    return Workload(
        kernel=lambda: grouped_gemm(x, w, offsets),
        baselines={"peer: loop of mm": loop_of_mm, "dense mm, same rows": lambda: x @ w[0].t()},
        flops=2.0 * experts * rows * k * n,
        note="outputs allocated per call by kernel and baselines alike",
    )


def masked_decode(device, *, dtype, experts, rows, k, n):
    x = torch.randn(experts, rows, k, device=device).to(dtype)
    w = torch.randn(experts, n, k, device=device).to(dtype) * k**-0.5
    counts = torch.full((experts,), rows, dtype=torch.int32, device=device)

    def loop_of_mm():
        return torch.stack([x[g] @ w[g].t() for g in range(experts)])

    return Workload(
        kernel=lambda: grouped_gemm_masked(x, w, counts),
        baselines={"peer: loop of mm": loop_of_mm, "peer: bmm": lambda: torch.bmm(x, w.transpose(1, 2))},
        flops=2.0 * experts * rows * k * n,
        bytes=float(w.nbytes + x.nbytes + experts * rows * n * x.element_size()),
        note="every group full (counts = rows); GB/s counts the weights streamed once plus x and y",
    )


def _cases():
    for dtype in (torch.float32, torch.bfloat16):
        yield Case("grouped_gemm", "e8x1024-k1024-n512", "E8 x 1024 rows, K1024, N512", dtype,
                   partial(prefill, dtype=dtype, experts=8, rows=1024, k=1024, n=512), quick=dtype == torch.bfloat16)
        yield Case("grouped_gemm", "flash-expert-e8x128", "E8 x 128 rows, K4096 (hidden), N2048 (moe_inter)", dtype,
                   partial(prefill, dtype=dtype, experts=8, rows=128, k=4096, n=2048))
        yield Case("grouped_gemm_masked", "decode-e32x4-k2048-n1024", "32 experts x 4 rows, K2048, N1024", dtype,
                   partial(masked_decode, dtype=dtype, experts=32, rows=4, k=2048, n=1024), bound="copy",
                   quick=dtype == torch.bfloat16)


CASES = list(_cases())
