"""What every backend package provides, and the one way they register kernels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from v4_ascend import library


@dataclass(frozen=True)
class Route:
    """How one backend serves one op: ``kernel`` names what runs, ``reason`` says why (not)."""

    kernel: str | None
    reason: str

    @property
    def served(self) -> bool:
        return self.kernel is not None


class BackendModule(Protocol):
    """The interface of ``v4_ascend.backends.<name>`` packages."""

    NAME: str
    DEVICE_TYPE: str
    DISPATCH_KEY: str

    def unavailable_reason(self) -> str | None:
        """None when the backend can load here, else why not (without loading anything)."""

    def register(self) -> None:
        """Register this backend's kernels for ops declared in :mod:`v4_ascend.library`."""

    def routes(self) -> dict[str, Route]:
        """Per declared op, the kernel this backend registers or why it does not serve the op."""


class KernelTable:
    """Python kernels of one backend for one dispatch key, registered together by :meth:`register`."""

    def __init__(self, dispatch_key: str):
        self.dispatch_key = dispatch_key
        self._lib: torch.library.Library | None = None
        self._pending: list[tuple[str, object]] = []

    def kernel(self, op: str):
        """Decorator: ``fn`` becomes ``op``'s kernel for this dispatch key once :meth:`register` runs."""

        def wrap(fn):
            self._pending.append((op, fn))
            return fn

        return wrap

    def registered(self) -> list[str]:
        """Ops that have a kernel in this table."""
        return [op for op, _ in self._pending]

    def register(self) -> None:
        if self._lib is not None:
            return
        self._lib = torch.library.Library(library.NAMESPACE, "IMPL")
        for op, fn in self._pending:
            self._lib.impl(op, fn, self.dispatch_key)
