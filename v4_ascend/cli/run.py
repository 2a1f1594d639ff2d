"""``v4-ascend run``: load a V4 checkpoint (or write and load the tiny one), prefill, decode, report speed.

Timings: prefill and decode tokens/s are measured without any profiler. The per-op breakdown then
profiles a few extra decode steps with ``torch.profiler`` and charges each outermost
``v4_ascend::*`` dispatcher op its inclusive CPU time (nested ops are not counted twice); the rest of
the step (projections, norms, RoPE, glue) is shown as one line.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from v4_ascend import backends
from v4_ascend.model.checkpoint import write_checkpoint
from v4_ascend.model.config import TINY
from v4_ascend.model.generate import generate
from v4_ascend.model.transformer import Transformer

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def register(subparsers) -> None:
    parser = subparsers.add_parser("run", help="generate with a V4 checkpoint (or the tiny one) and report speed")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="checkpoint directory (config.json + safetensors shards)")
    source.add_argument("--tiny", action="store_true", help="write the deterministic tiny checkpoint and use it "
                                                            "(the default without --checkpoint)")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-ids", type=int, nargs="+", help="prompt token ids (every sequence gets them)")
    prompt.add_argument("--prompt-len", type=int, default=24,
                        help="random prompts: sequence b gets prompt-len + 5*b tokens (default 24)")
    parser.add_argument("--max-new", type=int, default=16, help="tokens to generate per sequence (default 16)")
    parser.add_argument("--batch", type=int, default=2, help="sequences decoded together (default 2)")
    parser.add_argument("--chunk", type=int, default=64, help="prefill chunk, tokens per sequence (default 64)")
    parser.add_argument("--device", default="cpu", help="torch device of the model and caches (default cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="compute dtype (default float32: CPU bf16 GEMMs are ~10x slower; V4 serves in bfloat16)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1, as the benchmarks: decode steps of a small model "
                             "are too short for OpenMP to pay off, and spin-waiting threads lose on a busy machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts, the tiny weights and sampling")
    parser.add_argument("--profile-steps", type=int, default=4, help="extra decode steps profiled per op (0: none)")
    parser.add_argument("--verify", action="store_true",
                        help="recompute every generated position from scratch and report the max logit difference")
    parser.set_defaults(func=run)


def _prompts(args, vocab_size: int) -> list[torch.Tensor]:
    if args.prompt_ids:
        ids = torch.tensor(args.prompt_ids, dtype=torch.int64)
        if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
            raise SystemExit(f"--prompt-ids must lie in [0, {vocab_size}), got {args.prompt_ids}")
        return [ids] * args.batch
    gen = torch.Generator().manual_seed(args.seed)
    return [torch.randint(0, vocab_size, (args.prompt_len + 5 * b,), generator=gen) for b in range(args.batch)]


def op_breakdown(profile) -> dict[str, tuple[float, int]]:
    """``op -> (seconds, calls)`` of the outermost ``v4_ascend::`` ops of a finished ``torch.profiler`` run."""
    totals: dict[str, tuple[float, int]] = {}
    for event in profile.events():
        if not event.name.startswith("v4_ascend::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("v4_ascend::"):
            parent = parent.cpu_parent
        if parent is not None:
            continue
        seconds, calls = totals.get(event.name, (0.0, 0))
        totals[event.name] = (seconds + event.cpu_time_total / 1e6, calls + 1)
    return totals


def _load(args, console: Console) -> Transformer:
    dtype = DTYPES[args.dtype]
    start = time.perf_counter()
    if args.checkpoint is None:
        with tempfile.TemporaryDirectory(prefix="v4-ascend-tiny-") as directory:
            write_checkpoint(directory, TINY, seed=args.seed, shards=2)
            model = Transformer.from_checkpoint(directory, dtype, args.device)
            source = f"tiny checkpoint (seed {args.seed}, written to {directory})"
    else:
        model = Transformer.from_checkpoint(args.checkpoint, dtype, args.device)
        source = str(args.checkpoint)
    console.print(f"loaded {source} in {time.perf_counter() - start:.2f} s: {model.config.n_layers} layers, "
                  f"ratios {list(model.config.compress_ratios[: model.config.n_layers])}, dtype {args.dtype}, "
                  f"device {args.device}, backends {list(backends.loaded()) or ['reference']}, "
                  f"{torch.get_num_threads()} threads")
    return model


def run(args) -> int:
    if min(args.batch, args.max_new, args.chunk) < 1 or args.prompt_len < 1 or args.profile_steps < 0:
        raise SystemExit("--batch, --max-new, --chunk and --prompt-len must be >= 1, --profile-steps >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    model = _load(args, console)
    prompts = _prompts(args, model.config.vocab_size)
    cache = model.new_cache(len(prompts), max(map(len, prompts)) + args.max_new + args.profile_steps)
    stream = generate(model, prompts, args.max_new, args.temperature, args.top_p, args.seed, args.chunk, cache)

    start = time.perf_counter()
    steps = [next(stream)]  # the prefill, then the first sampled token
    prefill_s = time.perf_counter() - start
    columns = (TextColumn("decode"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[last]}"))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("decode", total=args.max_new - 1, last="")
        start = time.perf_counter()
        for step in stream:
            steps.append(step)
            progress.update(task, advance=1, last=f"last tokens {step.tokens.tolist()}")
        decode_s = time.perf_counter() - start

    generated = torch.stack([s.tokens for s in steps], dim=1).cpu()
    for b, (prompt, tokens) in enumerate(zip(prompts, generated)):
        console.print(f"sequence {b}: prompt {len(prompt)} tokens -> {tokens.tolist()}")
    prompt_tokens = sum(map(len, prompts))
    decoded = len(prompts) * (args.max_new - 1)
    console.print(f"prefill: {prompt_tokens} tokens in {prefill_s:.3f} s = {prompt_tokens / prefill_s:,.1f} tokens/s")
    if decoded:
        console.print(f"decode: {decoded} tokens ({args.max_new - 1} steps x batch {len(prompts)}) in {decode_s:.3f} s "
                      f"= {decoded / decode_s:,.1f} tokens/s")
    if args.profile_steps:
        _print_breakdown(model, cache, generated[:, -1], args.profile_steps, console)
    if args.verify:
        console.print(f"verify: max |cached - recomputed logits| = {_verify(model, prompts, generated, steps):.3e}",
                      soft_wrap=True)
    return 0


def _print_breakdown(model, cache, tokens, n_steps: int, console: Console) -> None:
    """Profile ``n_steps`` more decode steps and print the time of each outermost v4_ascend op."""
    ones = [1] * cache.batch
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        start = time.perf_counter()
        for _ in range(n_steps):
            tokens = model.forward(tokens, ones, cache).argmax(-1)
        wall = time.perf_counter() - start
    totals = op_breakdown(profile)
    table = Table(title=f"decode time per op ({n_steps} profiled steps, batch {cache.batch}; profiler on: "
                        f"{wall / n_steps * 1e3:.1f} ms/step)")
    for column in ("op", "calls", "ms/step", "share"):
        table.add_column(column, justify="left" if column == "op" else "right")
    for name, (seconds, calls) in sorted(totals.items(), key=lambda item: -item[1][0]):
        table.add_row(name, str(calls), f"{seconds / n_steps * 1e3:.2f}", f"{100 * seconds / wall:.1f} %")
    rest = wall - sum(seconds for seconds, _ in totals.values())
    table.add_row("other (projections, norms, RoPE, glue)", "", f"{rest / n_steps * 1e3:.2f}",
                  f"{100 * rest / wall:.1f} %")
    console.print(table)


def _verify(model, prompts, generated, steps) -> float:
    """Max |logit difference| between the cached decode and one fresh prefill of every full sequence."""
    sequences = [torch.cat((p, g[:-1])) for p, g in zip(prompts, generated)]
    cache = model.new_cache(len(sequences), max(map(len, sequences)))
    full = model.forward(torch.cat(sequences), [len(s) for s in sequences], cache, all_logits=True)
    worst = 0.0
    for b, rows in enumerate(full.split([len(s) for s in sequences])):
        expected = rows[len(prompts[b]) - 1:]
        got = torch.stack([s.logits[b] for s in steps])
        worst = max(worst, float((got - expected).abs().max()))
    return worst


__all__ = ["op_breakdown", "register", "run"]
