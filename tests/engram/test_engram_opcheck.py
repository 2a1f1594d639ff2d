"""opcheck over every registered Engram case (tests/core checks only the two smallest per op)."""

from __future__ import annotations

import pytest
import torch

from v4_ascend import library
from v4_ascend.testing import cases

OPS = ["engram_hash", "engram_lookup", "engram_gate"]


def _has_fp8(case) -> bool:
    return any(isinstance(a, torch.Tensor) and a.dtype == torch.float8_e4m3fn for a in case.args)


@pytest.mark.parametrize("op", OPS)
def test_opcheck_every_case(op):
    """torch's SchemaCheckMode compares inputs before/after with ``allclose``, which CPU torch does not
    implement for float8, so fp8-table cases run every opcheck sub-test except ``test_schema``."""
    overload = library.ops()[op].overload
    for case in cases.generate(op, "cpu", torch.float32):
        kwargs = {"test_utils": ("test_faketensor", "test_aot_dispatch_dynamic")} if _has_fp8(case) else {}
        torch.library.opcheck(overload, case.args, case.kwargs, **kwargs)


@pytest.mark.parametrize("op", OPS)
def test_every_case_of_every_dtype_runs_and_is_finite(op):
    """What ``v4-ascend check`` feeds each backend: the reference must accept all of it."""
    case_set = cases.case_sets()[op]
    for dtype in case_set.dtypes:
        for case in cases.generate(op, "cpu", dtype):
            outputs = library.ops()[op].overload(*case.args, **case.kwargs)
            for out in outputs if isinstance(outputs, tuple) else (outputs,):
                assert not out.is_floating_point() or torch.isfinite(out).all(), f"{op} {case.name} {dtype}"
