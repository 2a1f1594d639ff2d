"""Kernel-versus-reference checks on random inputs: the engine of ``v4-ascend check`` and the tests.

For each op, device and dtype, every case runs through the dispatcher (whatever kernel serves that
device) and through the Python reference on the host in fp32 (fp64 for fp64 inputs) on the same,
already rounded, inputs. Integer outputs must match exactly, and every output must be on the checked
device: a kernel (or the reference composition) that went through the CPU fails the check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_map

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


def _compare(outputs, expected, dtype, tol) -> tuple[float, bool]:
    worst, passed = 0.0, True
    for actual, want in zip(_as_tuple(outputs), _as_tuple(expected)):
        actual = actual.cpu()
        worst = max(worst, tolerance.max_error(actual.to(want.dtype), want))
        try:
            tolerance.assert_close(actual, want, dtype, tolerance=tol)
        except AssertionError:
            passed = False
    return worst, passed


def _fresh(value):
    """A private copy of every tensor, so each run starts from the same (possibly mutated) state."""
    return tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, value)


def _mutated(spec, args: tuple, kwargs: dict) -> tuple:
    """The arguments the op writes to (``Tensor(a!)`` in its schema), in schema order."""
    written = []
    for position, argument in enumerate(spec.overload._schema.arguments):
        if argument.alias_info is not None and argument.alias_info.is_write:
            written.append(args[position] if position < len(args) else kwargs[argument.name])
    return tuple(written)


def check_op(op: str, device: str | torch.device, dtype: torch.dtype, seed: int = 0) -> list[CheckResult]:
    """Run every case of ``op`` on ``device`` in ``dtype`` and compare with the reference."""
    device = torch.device(device)
    spec = library.ops()[op]
    backend, _ = serving_backend(op, device.type)
    results = []
    for case in cases.generate(op, device, dtype, seed):
        try:
            args, kwargs = _fresh(case.args), _fresh(case.kwargs)
            ref_args, ref_kwargs = tolerance.upcast(_fresh(case.args)), tolerance.upcast(_fresh(case.kwargs))
            outputs = _as_tuple(spec.overload(*args, **kwargs)) + _mutated(spec, args, kwargs)
            elsewhere = [str(o.device) for o in outputs if o.device.type != device.type]
            if elsewhere:
                raise RuntimeError(f"outputs on {', '.join(elsewhere)}, not on {device.type}")
            expected = _as_tuple(spec.reference(*ref_args, **ref_kwargs)) + _mutated(spec, ref_args, ref_kwargs)
            worst, passed = _compare(outputs, expected, dtype, cases.tolerance_for(op, dtype))
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
