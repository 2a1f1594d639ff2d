"""``v4-ascend info``: the backend report as a table (which kernel serves each op, and why not others)."""

from __future__ import annotations

import platform

import torch
from rich.console import Console
from rich.table import Table

import v4_ascend


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="show which kernel serves each op on each device, and why")
    parser.set_defaults(func=run)


def run(args) -> int:
    report = v4_ascend.backend_report()
    console = Console()
    console.print(
        f"v4_ascend {v4_ascend.__version__}, torch {torch.__version__}, {platform.machine()}; "
        f"V4_ASCEND_BACKEND={report.requested}; loaded: {', '.join(report.loaded) or 'none'}"
    )
    for name, why in report.skipped.items():
        console.print(f"  [dim]{name} not loaded: {why}[/dim]")
    table = Table(title="kernels serving each op")
    for column in ("op", "device", "backend", "kernel", "why not the others"):
        table.add_column(column)
    for row in report.rows:
        table.add_row(row.op, row.device, row.backend, row.kernel, "\n".join(row.why_not_others))
    console.print(table)
    return 0
