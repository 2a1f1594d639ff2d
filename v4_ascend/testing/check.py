"""Kernel-versus-reference checks on random inputs: the engine of ``v4-ascend check`` and the tests.

For each op, device and dtype, every case runs through the dispatcher (whatever kernel serves that
device) and through the Python reference on the host in fp32 (fp64 for fp64 inputs) on the same,
already rounded, inputs. Integer outputs must match exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from v4_ascend import library
from v4_ascend.report import serving_backend
from v4_ascend.testing import cases, tolerance


@dataclass(frozen=True)
class CheckResult:
    op: str
    backend: str
    device: str
    dtype: torch.dtype
    case: str
    max_error: float
    passed: bool
    error: str = ""


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _compare(outputs, expected, dtype) -> tuple[float, bool]:
    worst, passed = 0.0, True
    for actual, want in zip(_as_tuple(outputs), _as_tuple(expected)):
        actual = actual.cpu()
        worst = max(worst, tolerance.max_error(actual.to(want.dtype), want))
        try:
            tolerance.assert_close(actual, want, dtype)
        except AssertionError:
            passed = False
    return worst, passed


def check_op(op: str, device: str | torch.device, dtype: torch.dtype, seed: int = 0) -> list[CheckResult]:
    """Run every case of ``op`` on ``device`` in ``dtype`` and compare with the reference."""
    device = torch.device(device)
    spec = library.ops()[op]
    backend, _ = serving_backend(op, device.type)
    results = []
    for case in cases.generate(op, device, dtype, seed):
        try:
            outputs = spec.overload(*case.args, **case.kwargs)
            expected = spec.reference(*tolerance.upcast(case.args), **tolerance.upcast(case.kwargs))
            worst, passed = _compare(outputs, expected, dtype)
            results.append(CheckResult(op, backend, device.type, dtype, case.name, worst, passed))
        except Exception as error:  # a crash is a failed check, reported with its message
            message = f"{type(error).__name__}: {error}"
            results.append(CheckResult(op, backend, device.type, dtype, case.name, float("nan"), False, message))
    return results


def check_all(device: str | torch.device = "cpu", ops: list[str] | None = None, seed: int = 0) -> list[CheckResult]:
    results = []
    for op, case_set in cases.case_sets().items():
        if ops and op not in ops:
            continue
        for dtype in case_set.dtypes:
            results += check_op(op, device, dtype, seed)
    return results
