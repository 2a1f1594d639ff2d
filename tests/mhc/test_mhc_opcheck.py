"""opcheck over every registered mHC case (tests/core checks only the two smallest per op)."""

from __future__ import annotations

import pytest
import torch

from v4_ascend import library
from v4_ascend.testing import cases

OPS = ["mhc_sinkhorn", "mhc_pre", "mhc_post", "mhc_head"]


@pytest.mark.parametrize("op", OPS)
def test_opcheck_every_case(op):
    overload = library.ops()[op].overload
    for case in cases.generate(op, "cpu", torch.float32):
        torch.library.opcheck(overload, case.args, case.kwargs)


@pytest.mark.parametrize("op", OPS)
def test_every_case_of_every_dtype_runs_and_is_finite(op):
    """What ``v4-ascend check`` feeds each backend: the reference must accept all of it."""
    case_set = cases.case_sets()[op]
    for dtype in case_set.dtypes:
        for case in cases.generate(op, "cpu", dtype):
            outputs = library.ops()[op].overload(*case.args, **case.kwargs)
            for out in outputs if isinstance(outputs, tuple) else (outputs,):
                assert not out.is_floating_point() or torch.isfinite(out).all(), f"{op} {case.name} {dtype}"
