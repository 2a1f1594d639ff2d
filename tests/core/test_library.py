"""The op library itself: every declared op is complete (cases, opcheck, docs, typed wrapper)."""

from __future__ import annotations

import inspect

import pytest
import torch

import v4_ascend
from v4_ascend import library
from v4_ascend.testing import cases

OPS = sorted(library.ops())


def test_every_op_has_cases_wrapper_and_docstring():
    for name in OPS:
        assert name in cases.case_sets(), f"{name} has no input cases"
        wrapper = getattr(v4_ascend.ops, name)
        assert wrapper.__doc__ and "Args" in wrapper.__doc__, f"{name} wrapper lacks a docstring"
        schema_args = [a.name for a in library.ops()[name].overload._schema.arguments]
        assert list(inspect.signature(wrapper).parameters) == schema_args, f"{name}: wrapper != schema"


@pytest.mark.parametrize("op", OPS)
def test_opcheck(op):
    """Schema, fake kernel, autograd registration and AOT dispatch on small random cases."""
    overload = library.ops()[op].overload
    small = sorted(cases.generate(op, "cpu", torch.float32), key=lambda c: sum(
        a.numel() for a in c.args if isinstance(a, torch.Tensor)))[:2]
    for case in small:
        torch.library.opcheck(overload, case.args, case.kwargs)


@pytest.mark.parametrize("op", OPS)
def test_declared_once_with_reference_as_composite(op):
    qualname = library.ops()[op].qualname
    assert torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "CompositeExplicitAutograd")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "Meta") or \
        torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "CompositeExplicitAutograd")


def test_duplicate_declaration_is_refused():
    spec = library.ops()["grouped_gemm"]
    with pytest.raises(RuntimeError, match="declared twice"):
        library.define(spec.schema, family="moe", reference=spec.reference, fake=lambda *a: None)
