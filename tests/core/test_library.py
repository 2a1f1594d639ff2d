"""The op library itself: every declared op is complete (cases, opcheck, docs, typed wrapper)."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

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


class _Float8Seen(TorchDispatchMode):
    """Records whether any aten call inside the op receives a float8 tensor."""

    seen = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        leaves = pytree.tree_leaves((args, kwargs or {}))
        self.seen |= any(isinstance(t, torch.Tensor) and t.dtype in _FLOAT8 for t in leaves)
        return func(*args, **(kwargs or {}))


_FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e8m0fnu)


def _opcheck_utils(overload, case) -> tuple[str, ...]:
    """All opcheck tests, less test_schema where an aten call sees float8: its SchemaCheckMode compares
    every input with allclose, which PyTorch does not implement for float8 on the CPU."""
    with _Float8Seen() as mode:
        overload(*case.args, **case.kwargs)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    return utils[1:] if mode.seen else utils


@pytest.mark.parametrize("op", OPS)
def test_opcheck(op):
    """Schema, fake kernel, autograd registration and AOT dispatch on every fp32 case of the op."""
    overload = library.ops()[op].overload
    for case in cases.generate(op, "cpu", torch.float32):
        torch.library.opcheck(overload, case.args, case.kwargs, test_utils=_opcheck_utils(overload, case))


@pytest.mark.parametrize("op", OPS)
def test_declared_with_reference_as_composite_and_a_fake_kernel(op):
    spec = library.ops()[op]
    assert torch._C._dispatch_has_kernel_for_dispatch_key(spec.qualname, "CompositeExplicitAutograd")
    assert torch._library.simple_registry.singleton.find(spec.qualname).fake_impl.kernel is not None
    assert torch._C._dispatch_has_kernel_for_dispatch_key(spec.qualname, "Autograd") == spec.differentiable


def test_duplicate_declaration_is_refused():
    spec = library.ops()["grouped_gemm"]
    with pytest.raises(RuntimeError, match="declared twice"):
        library.define(spec.schema, family="moe", reference=spec.reference, fake=lambda *a: None)
