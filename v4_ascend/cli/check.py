"""``v4-ascend check``: every op's serving kernel against the reference on random inputs."""

from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table

from v4_ascend import backends
from v4_ascend.testing import cases, check


def register(subparsers) -> None:
    parser = subparsers.add_parser("check", help="compare each op's kernel with the reference on random inputs")
    parser.add_argument("--device", default="cpu", help="device to check (cpu, npu, mlu, cuda); default cpu")
    parser.add_argument("--op", action="append", help="only this op (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.set_defaults(func=run)


def run(args) -> int:
    try:  # before any device work: no silent CPU fallback, the vendor backend loaded
        backends.prepare_device(args.device, ["-m", "v4_ascend.cli", *args.argv])
    except RuntimeError as error:
        Console().print(f"[red]check: {error}[/red]", soft_wrap=True)
        return 2
    npu = torch.device(args.device).type == "npu"
    results = check.check_all(args.device, args.op, args.seed)
    table = Table(title=f"kernel vs reference on {args.device} (torch {torch.__version__}, seed {args.seed})")
    for column in ("op", "backend", "dtype", "cases", "max |error|", "tolerance (atol, rtol)", "result"):
        table.add_column(column)
    groups: dict[tuple, list[check.CheckResult]] = {}
    for result in results:
        groups.setdefault((result.op, result.backend, result.dtype), []).append(result)
    failed = 0
    for (op, backend, dtype), rows in groups.items():
        bad = [r for r in rows if not r.passed]
        failed += len(bad)
        verdict = "[green]pass[/green]" if not bad else "[red]FAIL: " + "; ".join(
            f"{r.case} {r.error}".strip() for r in bad) + "[/red]"
        worst = max(r.max_error for r in rows)
        table.add_row(op, backend, str(dtype).removeprefix("torch."), str(len(rows)), f"{worst:.2e}",
                      str(cases.tolerance_for(op, dtype)), verdict)
    console = Console()
    console.print(table)
    if npu:
        from v4_ascend.backends.npu import kit

        for line in kit.summary_lines():
            console.print(line)
    return 1 if failed else 0
