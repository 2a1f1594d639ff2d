"""The benchmark suite behind ``v4-ascend bench`` (protocol and goals: ``shared/spec/perf.md``).

It ships inside the package (not in a top-level ``benchmarks/`` folder) so that the installed
``v4-ascend`` entry point can run it without a source checkout; ``benchmarks/README.md`` holds the
measured tables. :mod:`v4_ascend.bench.harness` measures; one module per op family defines ``CASES``
(production shapes of V4-Flash plus small ones) with the kernel and its named baselines.
"""

from __future__ import annotations

import importlib

from v4_ascend.bench.harness import Case

# Modules defining CASES, in report order.
SUITES = ("sparse_attn", "grouped_gemm", "kv_compress", "indexer_topk", "engram", "mhc", "moe_route", "dispatch",
          "model_decode")


def cases(ops: list[str] | None = None, quick: bool = False) -> list[Case]:
    """The cases of the given ops (all when None); only the --quick subset when quick."""
    found = [case for suite in SUITES for case in importlib.import_module(f"v4_ascend.bench.{suite}").CASES]
    unknown = set(ops or ()) - {case.op for case in found}
    if unknown:
        raise ValueError(f"bench: no cases for op(s) {sorted(unknown)}; known: {sorted({c.op for c in found})}")
    return [case for case in found if (ops is None or case.op in ops) and (case.quick or not quick)]
