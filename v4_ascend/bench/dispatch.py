"""Op dispatch overhead: microseconds per call of ``torch.ops.v4_ascend.<op>`` at tiny decode shapes,
against the same op wrapped in a ``torch.library.custom_op`` (what a Python-defined op costs on top:
perf.md quotes 10-16 us). Each timed call makes ``CALLS`` calls, so "ms" per timed call reads as
microseconds per op call. The tiny shapes keep the kernels' own work to well under a microsecond, so
the time per call is an upper bound of the dispatch overhead."""

from __future__ import annotations

from functools import cache, partial

import torch

from v4_ascend.bench.harness import Case, Workload

CALLS = 1000
OP = "dispatch_overhead"


@cache
def _wrapped() -> dict[str, object]:
    """custom_ops (defined once per process, on first use) whose bodies call the v4_ascend ops."""

    @torch.library.custom_op("v4_ascend_bench::moe_route", mutates_args=())
    def moe_route(logits: torch.Tensor, topk: int, route_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ops.v4_ascend.moe_route.default(logits, topk, route_scale)

    @torch.library.custom_op("v4_ascend_bench::mhc_post", mutates_args=())
    def mhc_post(f: torch.Tensor, x: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
        return torch.ops.v4_ascend.mhc_post.default(f, x, post, comb)

    @torch.library.custom_op("v4_ascend_bench::engram_hash", mutates_args=())
    def engram_hash(ids: torch.Tensor, multipliers: torch.Tensor, moduli: torch.Tensor, offsets: torch.Tensor,
                    pad_id: int) -> torch.Tensor:
        return torch.ops.v4_ascend.engram_hash.default(ids, multipliers, moduli, offsets, pad_id)

    @torch.library.custom_op("v4_ascend_bench::sparse_attn", mutates_args=())
    def sparse_attn(q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, sink: torch.Tensor,
                    scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ops.v4_ascend.sparse_attn.default(q, kv, idx, sink, scale)

    @torch.library.custom_op("v4_ascend_bench::grouped_gemm", mutates_args=())
    def grouped_gemm(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return torch.ops.v4_ascend.grouped_gemm.default(x, w, offsets)

    return {"moe_route": moe_route, "mhc_post": mhc_post, "engram_hash": engram_hash, "sparse_attn": sparse_attn,
            "grouped_gemm": grouped_gemm}


def _tiny_args(op: str, device) -> tuple:
    if op == "moe_route":
        return torch.randn(1, 16, device=device), 2, 1.5
    if op == "mhc_post":
        return (torch.randn(1, 16, device=device), torch.randn(1, 4, 16, device=device),
                torch.rand(1, 4, device=device), torch.rand(1, 4, 4, device=device))
    if op == "sparse_attn":
        return (torch.randn(1, 2, 16, device=device), torch.randn(4, 16, device=device),
                torch.tensor([[0, 2, 3, -1]], dtype=torch.int32, device=device), torch.randn(2, device=device), 0.25)
    if op == "grouped_gemm":
        return (torch.randn(3, 16, device=device), torch.randn(2, 8, 16, device=device),
                torch.tensor([1, 3], dtype=torch.int32, device=device))
    primes = torch.tensor([[7, 11], [13, 17]])
    return (torch.randint(0, 100, (1, 1), device=device), torch.tensor([3, 5, 9], device=device),
            primes.to(device), (primes.cumsum(1) - primes).to(device), 0)


def overhead(device, *, op):
    args = _tiny_args(op, device)
    with torch.inference_mode(False):  # ordinary tensors: they carry the autograd key, inference tensors do not
        plain_args = _tiny_args(op, device)
    direct = getattr(torch.ops.v4_ascend, op).default
    wrapped = _wrapped()[op]

    def repeat(fn, inputs, inference=True):
        def calls():
            with torch.inference_mode(inference), torch.no_grad():
                for _ in range(CALLS):
                    fn(*inputs)

        return calls

    return Workload(kernel=repeat(direct, args),
                    baselines={"peer: torch.library.custom_op around it": repeat(wrapped, args),
                               "same op, no_grad, ordinary tensors": repeat(direct, plain_args, inference=False)},
                    note=f"{CALLS} calls per timed call: ms here = us per op call; kernel and custom_op under "
                    "inference_mode on inference tensors (no autograd key)")


CASES = [
    Case(OP, op, shape, torch.float32, partial(overhead, op=op), bound="copy", quick=op == "moe_route",
         serves=op)
    for op, shape in (("moe_route", "T1 x E16, top-2"), ("mhc_post", "T1 x 4 streams x 16"),
                      ("engram_hash", "1 token, orders 2-3 x 2 heads"),
                      ("sparse_attn", "T1 x 2 heads x 16, 4 slots (one -1)"),
                      ("grouped_gemm", "3 rows, 2 groups, K16, N8"))
]
