"""``v4-ascend memory``: KV-cache bytes per sequence of V4-Flash / V4-Pro versus a V3.2-style cache."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from v4_ascend.layers.cache import CacheBytes, mla_indexer_cache_bytes, model_cache_bytes
from v4_ascend.model.config import PRESETS

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20}
GIB, MIB = 1 << 30, 1 << 20


def parse_context(text: str) -> int:
    """Token count from ``"1M"`` (= 1,048,576), ``"128K"`` (= 131,072) or a plain integer."""
    value = text.strip().upper()
    number, suffix = (value[:-1], value[-1]) if value[-1:] in _SUFFIX else (value, "")
    if not number.isdigit() or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"--context must be a positive token count such as 1M or 65536, got {text!r}")
    return int(number) * _SUFFIX[suffix]


@dataclass(frozen=True)
class MemoryReport:
    """Per-sequence cache bytes of one model at one context length, and the V3.2-style comparison."""

    model: str
    tokens: int
    by_kind: dict[str, CacheBytes]  # production FP8 layout: swa / csa / hca / total
    bf16_total: CacheBytes
    v32_bytes: int

    @property
    def fraction_of_v32(self) -> float:
        return self.by_kind["total"].total / self.v32_bytes


def memory_report(model: str, tokens: int) -> MemoryReport:
    """The numbers ``v4-ascend memory`` prints (V3.2: 656 + 132 B per token per layer, 61 layers)."""
    config = PRESETS[model]
    return MemoryReport(
        model=model,
        tokens=tokens,
        by_kind=model_cache_bytes(config, tokens, "fp8"),
        bf16_total=model_cache_bytes(config, tokens, "bf16")["total"],
        v32_bytes=mla_indexer_cache_bytes(tokens),
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser("memory", help="KV-cache bytes per sequence for V4-Flash/Pro vs V3.2")
    parser.add_argument("--model", choices=sorted(PRESETS), default="flash")
    parser.add_argument("--context", type=parse_context, default=parse_context("1M"),
                        help="tokens per sequence: 1M, 128K or an integer (default 1M = 1,048,576)")
    parser.set_defaults(func=run)


def run(args) -> int:
    report = memory_report(args.model, args.context)
    table = Table(title=f"V4-{report.model.capitalize()} KV cache per sequence at {report.tokens:,} tokens "
                        "(production FP8 layout: 584 B/entry, 68 B/FP4 index key)")
    for column in ("layers", "window MiB", "entries MiB", "index MiB", "states MiB", "total MiB", "GiB"):
        table.add_column(column, justify="right")
    for kind, b in report.by_kind.items():
        mib = [f"{n / MIB:,.1f}" for n in (b.window, b.compressed, b.index_keys, b.states, b.total)]
        table.add_row(kind, *mib, f"{b.total / GIB:.3f}")
    console = Console()
    console.print(table)
    total = report.by_kind["total"]
    console.print(f"total: {total.total:,} bytes ({total.kv:,} of KV entries and index keys); "
                  f"bf16 reference layout: {report.bf16_total.total / GIB:.3f} GiB; "
                  f"V3.2-style MLA + indexer (788 B/token/layer x 61 layers): {report.v32_bytes / GIB:.3f} GiB; "
                  f"V4-{report.model.capitalize()} = {100 * report.fraction_of_v32:.1f} % of it "
                  f"(KV without compressor states: {100 * total.kv / report.v32_bytes:.1f} %)")
    return 0
