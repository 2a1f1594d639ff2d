"""Backend registry: picks which kernel packages load in this process.

Each backend is a package ``v4_ascend.backends.<name>`` implementing
:class:`v4_ascend.backends.base.BackendModule`; it only registers kernels for ops declared in
:mod:`v4_ascend.library`. ``V4_ASCEND_BACKEND=auto|reference|cpu|npu|mlu|triton`` forces a choice:

- ``auto`` (default): the C++ CPU kernels when built, plus the vendor that owns PyTorch's PrivateUse1
  slot in this process (``npu`` for torch_npu, ``mlu`` for torch_mlu), plus Triton where it can run;
- ``reference``: nothing loads; the pure-PyTorch references serve every device;
- a backend name: only that backend loads, and it is an error if it cannot.

A process never loads two vendor backends: they would both register ``PrivateUse1`` kernels and the
later would silently override the earlier.
"""

from __future__ import annotations

import importlib
import os
import warnings

import torch

from v4_ascend.backends.base import BackendModule, Route

ENV = "V4_ASCEND_BACKEND"
CHOICES = ("auto", "reference", "cpu", "npu", "mlu", "triton")
BACKENDS = ("cpu", "npu", "mlu", "triton")
VENDORS = ("npu", "mlu")

_loaded: dict[str, BackendModule] = {}
_skipped: dict[str, str] = {}


def requested() -> str:
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENV} must be one of {', '.join(CHOICES)}, got {choice!r}")
    return choice


def privateuse1_name() -> str:
    """The device name PyTorch's PrivateUse1 slot has in this process (``privateuseone`` if unclaimed)."""
    return torch._C._get_privateuse1_backend_name()


def module(name: str) -> BackendModule:
    return importlib.import_module(f"v4_ascend.backends.{name}")


def load() -> None:
    """Load the backends that :func:`requested` selects (idempotent)."""
    choice = requested()
    if choice == "reference":
        for name in BACKENDS:
            _skipped[name] = f"{ENV}=reference"
        return
    candidates = BACKENDS if choice == "auto" else (choice,)
    for name in candidates:
        if name in _loaded:
            continue
        backend = module(name)
        reason = backend.unavailable_reason()
        if reason is None:
            _activate(name, backend)
        elif choice != "auto":
            raise RuntimeError(f"{ENV}={name}, but the {name} backend cannot load: {reason}")
        else:
            _skipped[name] = reason
            if name == "cpu":
                warnings.warn(f"v4_ascend: {reason}; CPU tensors use the reference kernels", stacklevel=3)
    for name in BACKENDS:
        if name not in _loaded and name not in _skipped:
            _skipped[name] = f"{ENV}={choice}"


def _activate(name: str, backend: BackendModule) -> None:
    if name in VENDORS:
        other = [v for v in VENDORS if v in _loaded and v != name]
        if other:
            raise RuntimeError(
                f"v4_ascend: refusing to load the {name} backend: the {other[0]} backend is already "
                "loaded and both register PrivateUse1 kernels (one vendor per process)"
            )
    backend.register()
    _loaded[name] = backend
    _skipped.pop(name, None)


def loaded() -> tuple[str, ...]:
    """Names of the backends whose kernels are registered in this process."""
    return tuple(_loaded)


def skipped() -> dict[str, str]:
    """Backends not loaded, with the reason."""
    return dict(_skipped)


from v4_ascend.backends.prepare import VendorModuleMissing, prepare_device  # noqa: E402  (uses load above)

__all__ = [
    "BACKENDS", "CHOICES", "ENV", "Route", "VendorModuleMissing", "load", "loaded", "module", "prepare_device",
    "privateuse1_name", "requested", "skipped",
]
