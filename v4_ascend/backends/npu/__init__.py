"""Ascend backend: ``PrivateUse1`` kernels when torch_npu owns the slot (device ``npu``).

Kernels call torch_npu's fused ops where their semantics match V4 exactly and otherwise leave the op
to the reference composition, which runs on the device (never a CPU fallback).
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from v4_ascend.backends import vendor
from v4_ascend.backends.base import Route

NAME = "npu"
DEVICE_TYPE = "npu"
DISPATCH_KEY = "PrivateUse1"


def unavailable_reason() -> str | None:
    return vendor.unavailable_reason("npu", "torch_npu", "import torch_npu before v4_ascend")


@functools.cache
def load_native() -> str | None:
    """Load ``v4_ascend._C_npu`` (C++ aclnn glue, built only where CANN is) if present; its path or None.

    The library only registers ``TORCH_LIBRARY`` ops and kernels, so it is loaded with
    ``torch.ops.load_library`` rather than imported.
    """
    spec = importlib.util.find_spec("v4_ascend._C_npu")
    if spec is None or spec.origin is None:
        return None
    torch.ops.load_library(spec.origin)
    return spec.origin


def register() -> None:
    from v4_ascend.backends.npu import kernels

    kernels.KERNELS.register()


def routes() -> dict[str, Route]:
    """Per declared op, its route on this process's SoC (from the capability table)."""
    from v4_ascend.backends.npu import kernels

    return kernels.KERNELS.routes(kernels.soc())
