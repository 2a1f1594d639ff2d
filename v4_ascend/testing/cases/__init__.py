"""Random input cases per op: used by ``v4-ascend check``, ``opcheck`` tests and kernel tests.

A family module registers one generator per op with :func:`register`. A generator takes
``(device, dtype, generator)`` and returns a list of :class:`Case` (random data, never zeros),
covering production-like and corner-case shapes; shapes stay small enough to run in a unit test unless
``large=True`` is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Case:
    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)


CaseGenerator = Callable[[torch.device, torch.dtype, torch.Generator], list[Case]]


@dataclass(frozen=True)
class CaseSet:
    op: str
    generate: CaseGenerator
    dtypes: tuple[torch.dtype, ...]
    # Per-dtype (atol, rtol) replacing testing.tolerance.TOLERANCE, for ops whose low-precision run
    # rounds or re-quantises intermediates (the reference they are compared with does not).
    tolerance: dict[torch.dtype, tuple[float, float]] | None = None


_REGISTRY: dict[str, CaseSet] = {}

DEFAULT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def register(
    op: str,
    dtypes: tuple[torch.dtype, ...] = DEFAULT_DTYPES,
    tolerance: dict[torch.dtype, tuple[float, float]] | None = None,
):
    def wrap(fn: CaseGenerator) -> CaseGenerator:
        if op in _REGISTRY:
            raise RuntimeError(f"cases for {op} registered twice")
        _REGISTRY[op] = CaseSet(op, fn, dtypes, tolerance)
        return fn

    return wrap


def tolerance_for(op: str, dtype: torch.dtype) -> tuple[float, float]:
    from v4_ascend.testing.tolerance import TOLERANCE

    override = _REGISTRY[op].tolerance or {}
    return override.get(dtype, TOLERANCE[dtype])


def case_sets() -> dict[str, CaseSet]:
    return dict(_REGISTRY)


def generate(op: str, device: torch.device | str, dtype: torch.dtype, seed: int = 0) -> list[Case]:
    gen = torch.Generator().manual_seed(seed)
    return _REGISTRY[op].generate(torch.device(device), dtype, gen)


def randn(*shape, dtype, device, gen, scale: float = 1.0) -> torch.Tensor:
    """Host-generated normal data moved to ``device`` (same values on every device)."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(device)


def randint(low, high, shape, *, dtype=torch.int32, device, gen) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=gen, dtype=torch.int64).to(dtype).to(device)


def small_ints(*shape, dtype, device, gen, bound: int = 3) -> torch.Tensor:
    """Integers in [-bound, bound] as ``dtype``: exact in every float dtype, so sums of their products do not
    depend on the order of summation (for ops whose integer outputs rank such sums)."""
    return randint(-bound, bound + 1, shape, dtype=torch.int64, device="cpu", gen=gen).to(dtype).to(device)


from v4_ascend.testing.cases import attention, engram, mhc, moe, quant  # noqa: E402,F401  (registers the families)
