"""Ascend backend: ``PrivateUse1`` kernels when torch_npu owns the slot (device ``npu``).

Kernels call torch_npu's fused ops where their semantics match V4 exactly and otherwise leave the op
to the reference composition, which runs on the device (never a CPU fallback).
"""

from __future__ import annotations

from v4_ascend.backends import vendor
from v4_ascend.backends.base import Route

NAME = "npu"
DEVICE_TYPE = "npu"
DISPATCH_KEY = "PrivateUse1"


def unavailable_reason() -> str | None:
    return vendor.unavailable_reason("npu", "torch_npu", "import torch_npu before v4_ascend")


def register() -> None:
    from v4_ascend.backends.npu import kernels

    kernels.TABLE.register()


def routes() -> dict[str, Route]:
    from v4_ascend.backends.npu import kernels

    return kernels.routes()
