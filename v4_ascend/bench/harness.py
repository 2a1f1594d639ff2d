"""The measuring machinery of the benchmark suite (protocol: ``shared/spec/perf.md``).

- Machine ceilings are measured at start-up and again at the end, keeping the higher value (a busy
  moment of a shared VM must not lower the ceiling of a whole run): a large fp32 and bf16 ``torch.mm``
  (GFLOP/s) and a large tensor copy (GB/s, bytes read + written).
- Each case times the kernel under test and its named baselines in the same process, alternating
  (the order flips every round so that neither side always runs on a warmer cache), after one warm-up
  call each; the minimum and the median of the repetitions are kept.
- Each (case, baseline) pair is one row: times, GFLOP/s from an analytic FLOP count and/or GB/s from
  the minimum bytes that must move, the fraction of the machine ceiling, the speedup (baseline
  minimum / kernel minimum) and, on Linux CPUs, the peak memory growth of one call of each side.
  Tables end with the geometric mean of the speedups.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import math
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import v4_ascend
from v4_ascend.bench.peaks import PublishedPeak
from v4_ascend.report import serving_backend


@dataclass
class Workload:
    """Fresh inputs of one case bound into callables: the kernel under test and its baselines."""

    kernel: Callable[[], object]
    baselines: dict[str, Callable[[], object]]
    flops: float = 0.0  # analytic FLOP count of one call (0: not reported)
    bytes: float = 0.0  # minimum bytes one call must move (0: not reported)
    note: str = ""
    backend: str | None = None  # what serves the kernel when it is not one op of this process (default: the op's)


@dataclass(frozen=True)
class Case:
    """A named benchmark case; ``build(device)`` makes its inputs (random, never zeros)."""

    op: str
    name: str
    shape: str
    dtype: torch.dtype
    build: Callable[[torch.device], Workload]
    bound: str = "gemm"  # the ceiling the "% of ceiling" column refers to: "gemm" or "copy"
    quick: bool = False  # part of the --quick subset
    serves: str | None = None  # the op whose serving backend is reported, when `op` is not an op (default: op)
    # False: the work runs in other processes, whose memory and CPU time this one cannot see
    in_process: bool = True


@dataclass(frozen=True)
class Ceilings:
    gemm: dict[torch.dtype, float]  # GFLOP/s of a large torch.mm per dtype
    copy: float  # GB/s of a large copy, bytes read + written

    def of(self, case: Case) -> float:
        return self.copy if case.bound == "copy" else self.gemm[case.dtype]

    def __str__(self) -> str:
        gemm = ", ".join(f"{dtype_name(k)} {v:.0f}" for k, v in self.gemm.items())
        return f"mm GFLOP/s {gemm}; copy {self.copy:.1f} GB/s"

    def best(self, other: Ceilings) -> Ceilings:
        """The higher of two measurements of each ceiling."""
        return Ceilings({k: max(v, other.gemm[k]) for k, v in self.gemm.items()}, max(self.copy, other.copy))


@dataclass(frozen=True)
class Timing:
    seconds: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class Row:
    case: Case
    baseline: str
    backend: str
    kernel: Timing
    reference: Timing
    flops: float
    bytes: float
    ceiling: float
    note: str = ""
    kernel_peak: float | None = None  # peak resident-memory growth of one call, bytes (None: not measured)
    reference_peak: float | None = None
    published: float | None = None  # the device's published peak in the unit of `rate` (None: no figure)

    def rate(self, timing: Timing) -> float:
        """GFLOP/s for compute-bound cases, GB/s for bandwidth-bound ones (at the minimum time)."""
        amount = self.bytes if self.case.bound == "copy" else self.flops
        return amount / timing.min / 1e9 if amount else float("nan")

    def fraction(self, timing: Timing) -> float:
        return self.rate(timing) / self.ceiling

    def fraction_of_published(self, timing: Timing) -> float:
        return self.rate(timing) / self.published if self.published else float("nan")

    @property
    def speedup(self) -> float:
        return self.reference.min / self.kernel.min


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for queued device work: a no-op on the CPU (synchronous ops), else
    ``torch.accelerator.synchronize``, or the device module's ``synchronize`` (``torch.npu``,
    ``torch.mlu``, ...) where the accelerator API does not support the backend."""
    if device.type == "cpu":
        return lambda: None
    try:
        torch.accelerator.synchronize()
        return torch.accelerator.synchronize
    except RuntimeError:
        module = getattr(torch, device.type, None)
        if module is None or not hasattr(module, "synchronize"):
            raise
        module.synchronize()
        return module.synchronize


# Clocks: wall time (the protocol), or the CPU time of this process, which leaves out the time the
# process spent descheduled on a busy shared VM (meaningful for one CPU thread only).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _best_of(fn: Callable[[], object], sync: Callable[[], None], reps: int, clock: Callable[[], float]) -> float:
    fn()
    sync()
    best = math.inf
    for _ in range(reps):
        start = clock()
        fn()
        sync()
        best = min(best, clock() - start)
    return best


def measure_ceilings(device: torch.device, quick: bool, clock: str = "wall") -> Ceilings:
    """Large-mm GFLOP/s (fp32, bf16) and copy GB/s of this machine, with the current threads (best of
    10 calls, 5 when quick)."""
    sync, timer = synchronizer(device), CLOCKS[clock]
    reps = 5 if quick else 10
    n = 1024 if quick else 2048
    gemm = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        out = torch.empty(n, n, device=device, dtype=dtype)
        gemm[dtype] = 2 * n**3 / _best_of(lambda a=a, b=b, out=out: torch.mm(a, b, out=out), sync, reps, timer) / 1e9
    elements = (16 if quick else 64) << 20
    src = torch.randn(elements, device=device)
    dst = torch.empty_like(src).fill_(1.0)  # touched: page faults are not bandwidth
    copy = 2 * src.nbytes / _best_of(lambda: dst.copy_(src), sync, reps, timer) / 1e9
    return Ceilings(gemm, copy)


def time_alternating(fns: dict[str, Callable[[], object]], sync: Callable[[], None], reps: int,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """Times every callable `reps` times, interleaved, after one warm-up call each."""
    for fn in fns.values():
        fn()
    sync()
    seconds = {name: [] for name in fns}
    order = list(fns)
    for rep in range(reps):
        for name in order if rep % 2 == 0 else reversed(order):
            start = clock()
            fns[name]()
            sync()
            seconds[name].append(clock() - start)
    return {name: Timing(tuple(values)) for name, values in seconds.items()}


def _load_libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return libc if hasattr(libc, "malloc_trim") else None
    except (OSError, TypeError):
        return None


_LIBC = _load_libc()


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field_name}:\s+(\d+) kB", status.read(), re.M).group(1))


def peak_growth(fn: Callable[[], object], device: torch.device) -> float | None:
    """Bytes by which one call raises the process's peak resident memory above what was resident
    before it (outputs included), on Linux CPUs; None elsewhere. Freed heap memory is first returned to
    the system (glibc ``malloc_trim``); what an allocator still holds and reuses is not seen, so this is
    a lower bound."""
    if device.type != "cpu":
        return None
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current VmRSS
        before = _status_kib("VmRSS")
        fn()
        return 1024.0 * max(0, _status_kib("VmHWM") - before)
    except (OSError, AttributeError):
        return None


KERNEL = "kernel"


def run_cases(cases: list[Case], device: torch.device, ceilings: Ceilings, reps: int, console: Console,
              clock: str = "wall", published: PublishedPeak | None = None) -> list[Row]:
    """Builds and times every case (inputs freed after each), with a progress bar; `published`: the
    device's published peak, for the roofline column."""
    sync = synchronizer(device)
    rows: list[Row] = []
    if clock == "cpu":  # process CPU time says nothing of work done in other processes
        for case in cases:
            if not case.in_process:
                console.print(f"[yellow]{case.op} {case.name}: not run with --clock cpu (it runs in worker "
                              "processes)[/yellow]")
        cases = [case for case in cases if case.in_process]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=len(cases))
        for case in cases:
            progress.update(task, description=f"{case.op} {case.name} {dtype_name(case.dtype)}")
            work = case.build(device)
            contenders = {KERNEL: work.kernel, **work.baselines}
            timings = time_alternating(contenders, sync, reps, CLOCKS[clock])
            peaks = {name: peak_growth(fn, device) if case.in_process else None for name, fn in contenders.items()}
            backend = work.backend or serving_backend(case.serves or case.op, device.type)[0]
            for baseline in work.baselines:
                rows.append(Row(case, baseline, backend, timings[KERNEL], timings[baseline], work.flops, work.bytes,
                                ceilings.of(case), work.note, peaks[KERNEL], peaks[baseline],
                                published.of(case.bound, case.dtype) if published else None))
            del work
            progress.advance(task)
    return rows


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def megabytes(amount: float | None) -> str:
    return "n/a" if amount is None else f"{amount / 2**20:.1f}"


def geomean(values: Iterable[float]) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def _or_na(value: float, template: str) -> str:
    """`template` filled with `value`, or "n/a" for a rate the case does not report."""
    return "n/a" if math.isnan(value) else template.format(value)


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _by_op(rows: list[Row]) -> dict[str, list[Row]]:
    by_op: dict[str, list[Row]] = {}
    for row in rows:
        by_op.setdefault(row.case.op, []).append(row)
    return by_op


def _columns(roofline: bool) -> list[str]:
    """Table columns; `roofline`: a device with a published peak adds one."""
    return ["case", "dtype", "kernel ms min / med", "baseline", "baseline ms min / med", "kernel rate", "% ceil.",
            "baseline % ceil.", *(["kernel % of published peak"] if roofline else []), "peak MB kernel / baseline",
            "speedup"]


def _cells(row: Row, roofline: bool) -> list[str]:
    unit = "GB/s" if row.case.bound == "copy" else "GFLOP/s"
    published = [_or_na(100 * row.fraction_of_published(row.kernel), "{:.0f} %")] if roofline else []
    return [row.case.name, dtype_name(row.case.dtype), f"{row.kernel.min * 1e3:.3f} / {row.kernel.median * 1e3:.3f}",
            row.baseline, f"{row.reference.min * 1e3:.3f} / {row.reference.median * 1e3:.3f}",
            _or_na(row.rate(row.kernel), f"{{:.1f}} {unit}"), _or_na(100 * row.fraction(row.kernel), "{:.0f} %"),
            _or_na(100 * row.fraction(row.reference), "{:.0f} %"), *published,
            f"{megabytes(row.kernel_peak)} / {megabytes(row.reference_peak)}", f"{row.speedup:.2f}x"]


def _notes(op_rows: list[Row]) -> dict[str, str]:
    return {r.case.name: f"{r.case.shape}{'; ' + r.note if r.note else ''}" for r in op_rows}


def render(rows: list[Row], ceilings: Ceilings, console: Console) -> None:
    """One table per op, each closed by the geometric mean of its speedups."""
    roofline = any(r.published for r in rows)
    columns = _columns(roofline)
    for op, op_rows in _by_op(rows).items():
        served = ", ".join(dict.fromkeys(r.backend for r in op_rows))
        table = Table(title=f"{op} (served by: {served})", show_lines=False)
        for column in columns:
            table.add_column(column, justify="left" if column in ("case", "dtype", "baseline") else "right")
        for row in op_rows:
            table.add_row(*_cells(row, roofline))
        table.add_row("geomean", *[""] * (len(columns) - 2), f"{geomean(r.speedup for r in op_rows):.2f}x",
                      style="bold")
        console.print(table)
        for name, note in _notes(op_rows).items():
            console.print(f"  [dim]{name}: {note}[/dim]")


def write_markdown(rows: list[Row], path: str, meta: dict) -> str:
    """The tables of `render` as GitHub Markdown (for benchmarks/README.md); returns what happened."""
    try:
        from tabulate import tabulate
    except ImportError:
        return f"no Markdown written to {path}: tabulate is not installed (pip install tabulate)"
    roofline = any(r.published for r in rows)
    columns = _columns(roofline)
    ceilings = meta["ceilings"]
    gemm = ", ".join(f"{k} {v:.0f}" for k, v in ceilings["gemm_gflops"].items())
    parts = [f"{meta['cpu']}, torch {meta['torch']}, {meta['device']}, {meta['threads']} thread(s), {meta['clock']} "
             f"clock; ceilings used: `mm` GFLOP/s {gemm}; copy {ceilings['copy_gbps']:.1f} GB/s\n"]
    for op, op_rows in _by_op(rows).items():
        served = ", ".join(dict.fromkeys(r.backend for r in op_rows))
        body = [_cells(row, roofline) for row in op_rows]
        body.append(["**geomean**", *[""] * (len(columns) - 2), f"**{geomean(r.speedup for r in op_rows):.2f}x**"])
        notes = "\n".join(f"- `{name}`: {note}" for name, note in _notes(op_rows).items())
        parts.append(f"#### {op} (served by: {served})\n\n{tabulate(body, columns, tablefmt='github')}\n\n{notes}\n")
    with open(path, "w") as out:
        out.write("\n".join(parts))
    return f"Markdown tables written to {path}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def metadata(device: torch.device, ceilings: Ceilings, clock: str) -> dict:
    return {
        "clock": clock,
        "v4_ascend": v4_ascend.__version__,
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "ceilings": {"gemm_gflops": {dtype_name(k): v for k, v in ceilings.gemm.items()}, "copy_gbps": ceilings.copy},
    }


def write_json(rows: list[Row], path: str, meta: dict) -> None:
    """One JSON object per row (JSON lines), for comparing commits."""
    with open(path, "w") as out:
        for row in rows:
            record = {
                "op": row.case.op,
                "case": row.case.name,
                "shape": row.case.shape,
                "dtype": dtype_name(row.case.dtype),
                "backend": row.backend,
                "baseline": row.baseline,
                "kernel_s": {"min": row.kernel.min, "median": row.kernel.median, "all": row.kernel.seconds},
                "baseline_s": {"min": row.reference.min, "median": row.reference.median,
                               "all": row.reference.seconds},
                "gflops": row.flops / row.kernel.min / 1e9 if row.flops else None,
                "gbps": row.bytes / row.kernel.min / 1e9 if row.bytes else None,
                "bound": row.case.bound,
                "fraction_of_ceiling": _finite(row.fraction(row.kernel)),
                "baseline_fraction_of_ceiling": _finite(row.fraction(row.reference)),
                "fraction_of_published_peak": _finite(row.fraction_of_published(row.kernel)),
                "ratio": row.speedup,
                "ratio_median": row.reference.median / row.kernel.median,
                "kernel_peak_bytes": row.kernel_peak,
                "baseline_peak_bytes": row.reference_peak,
                "note": row.note,
                **meta,
            }
            out.write(json.dumps(record) + "\n")


def plot(rows: list[Row], path: str) -> str:
    """Writes a PNG of the speedup per (case, baseline); returns what happened, for the console."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"no plot written to {path}: matplotlib is not installed (pip install matplotlib)"
    labels = [f"{r.case.op} {r.case.name} {dtype_name(r.case.dtype)}\nvs {r.baseline}" for r in rows]
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    axes.barh(range(len(rows)), [r.speedup for r in rows], color=["tab:green" if r.speedup >= 1 else "tab:red"
                                                                  for r in rows])
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_yticks(range(len(rows)), labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("speedup over the baseline (min time ratio, log scale)")
    axes.set_title(f"v4_ascend kernels, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return f"plot written to {path}"
