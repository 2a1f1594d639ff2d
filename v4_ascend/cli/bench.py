"""``v4-ascend bench``: the microbenchmark suite (kernel vs named baselines, ceilings, ratios)."""

from __future__ import annotations

import os

import torch
from rich.console import Console

from v4_ascend import backends, bench
from v4_ascend.bench import harness, peaks


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="time each op's kernel against its named baselines (ratios; never pass/fail)"
    )
    parser.add_argument("--op", action="append", help="only this op (repeatable); default: every op with cases")
    parser.add_argument("--device", default="cpu", help="device to run on (cpu, npu, mlu, cuda); default cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--reps", type=int, help="timed repetitions per contender (default 7, --quick 5; min 5)")
    parser.add_argument("--json", metavar="PATH", help="write one JSON object per row to PATH (JSON lines)")
    parser.add_argument("--markdown", metavar="PATH",
                        help="write the tables as GitHub Markdown to PATH (needs tabulate: the [bench] extra)")
    parser.add_argument("--plot", metavar="PATH",
                        help="write a PNG of the speedups to PATH (needs matplotlib: the [bench] extra)")
    parser.add_argument("--clock", choices=sorted(harness.CLOCKS), default="wall",
                        help="wall time (default), or process CPU time, which leaves out time spent descheduled on a "
                        "busy machine (one CPU thread only)")
    parser.add_argument("--quick", action="store_true", help="a small subset with smaller ceilings (< 1 minute)")
    parser.set_defaults(func=run)


def run(args) -> int:
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for the tables
        console = Console(width=150)
    reps = args.reps or (5 if args.quick else 7)
    if reps < 5 or args.threads < 1:
        console.print("[red]bench: --reps must be >= 5 and --threads >= 1[/red]")
        return 2
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        console.print("[red]bench: --clock cpu measures one CPU thread only (--threads 1 --device cpu)[/red]")
        return 2
    for option in ("json", "markdown", "plot"):  # found before minutes of measuring, not after
        path = getattr(args, option)
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            console.print(f"[red]bench: the folder of --{option} {path} does not exist[/red]")
            return 2
    try:
        cases = bench.cases(args.op, quick=args.quick)
        backends.prepare_device(args.device, ["-m", "v4_ascend.cli", *args.argv])
    except (ValueError, RuntimeError) as error:
        console.print(f"[red]{error}[/red]")
        return 2
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with torch.inference_mode():
        ceilings = harness.measure_ceilings(device, args.quick, args.clock)
        console.print(f"{harness.cpu_model()}, torch {torch.__version__}, {device}, {args.threads} thread(s), "
                      f"{reps} reps, {args.clock} clock; ceilings at start-up: {ceilings}")
        name = peaks.device_name(device)
        published = peaks.lookup(name) if name else None
        if device.type != "cpu":
            console.print(f"roofline column: published peak of {published}" if published else
                          f"no roofline column: no published peak listed for {name or device}")
        rows = harness.run_cases(cases, device, ceilings, reps, console, args.clock, published)
        ceilings = ceilings.best(harness.measure_ceilings(device, args.quick, args.clock))
        for row in rows:
            row.ceiling = ceilings.of(row.case)
        console.print(f"ceilings used (the higher of start-up and end): {ceilings}")
        meta = harness.metadata(device, ceilings, args.clock)
    harness.render(rows, ceilings, console)
    if args.json:
        harness.write_json(rows, args.json, meta)
        console.print(f"JSON lines written to {args.json}")
    if args.markdown:
        console.print(harness.write_markdown(rows, args.markdown, meta))
    if args.plot:
        console.print(harness.plot(rows, args.plot))
    return 0
