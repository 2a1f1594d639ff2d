"""The op library: every v4_ascend operator is declared here, once.

An op is declared with :func:`define` from its family module in :mod:`v4_ascend.ops`. The declaration
holds the schema, the pure-PyTorch reference (registered as the ``CompositeExplicitAutograd`` kernel,
so it is the fallback on every device), the fake kernel, and optionally autograd. Backends only add
kernels for other dispatch keys (``CPU``, ``PrivateUse1``, ``CUDA``) to ops declared here.

``torch.library.Library`` + ``register_fake`` is used instead of ``torch.library.custom_op``: the
latter adds 10-16 us of Python per call, too much for decode paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

NAMESPACE = "v4_ascend"
_LIB = torch.library.Library(NAMESPACE, "DEF")


@dataclass(frozen=True)
class OpSpec:
    """What the library knows about one declared op."""

    name: str
    family: str
    schema: str
    reference: Callable
    differentiable: bool

    @property
    def qualname(self) -> str:
        return f"{NAMESPACE}::{self.name}"

    @property
    def overload(self) -> torch._ops.OpOverload:
        return getattr(getattr(torch.ops, NAMESPACE), self.name).default


_OPS: dict[str, OpSpec] = {}


def define(
    schema: str,
    *,
    family: str,
    reference: Callable,
    fake: Callable,
    differentiable: bool = False,
) -> OpSpec:
    """Declare ``v4_ascend::<name>`` from its schema, reference and fake kernel.

    ``differentiable=True`` registers autograd whose backward is the vector-Jacobian product of the
    reference itself (recomputed under autograd), so every backend's forward shares one, tested,
    gradient formula. Integer outputs get no gradient.
    """
    name = schema.split("(", 1)[0]
    if name in _OPS:
        raise RuntimeError(f"op {NAMESPACE}::{name} is declared twice")
    _LIB.define(schema)
    _LIB.impl(name, reference, "CompositeExplicitAutograd")
    torch.library.register_fake(f"{NAMESPACE}::{name}", fake, lib=_LIB)
    spec = OpSpec(name, family, schema, reference, differentiable)
    if differentiable:
        _register_reference_autograd(spec)
    _OPS[name] = spec
    return spec


def ops() -> dict[str, OpSpec]:
    """All declared ops by name, in declaration order."""
    return dict(_OPS)


def _register_reference_autograd(spec: OpSpec) -> None:
    def setup_context(ctx, inputs, output):
        ctx.inputs = inputs

    def backward(ctx, *grads):
        inputs = [
            x.detach().requires_grad_(True)
            if isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex())
            else x
            for x in ctx.inputs
        ]
        with torch.enable_grad():
            outputs = spec.reference(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        pairs = [
            (o, g)
            for o, g in zip(outputs, grads)
            if g is not None and isinstance(o, torch.Tensor) and o.requires_grad
        ]
        wrt = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
        found = torch.autograd.grad(
            [o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True
        ) if pairs else [None] * len(wrt)
        it = iter(found)
        return tuple(
            next(it) if isinstance(x, torch.Tensor) and x.requires_grad else None for x in inputs
        )

    torch.library.register_autograd(spec.qualname, backward, setup_context=setup_context, lib=_LIB)
