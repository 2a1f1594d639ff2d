"""Cambricon backend: ``PrivateUse1`` kernels when torch_mlu owns the slot (device ``mlu``).

Kernels call torch_mlu_ops (tmo) where their semantics match V4 exactly and otherwise leave the op to
the reference composition, which runs on the device (never a CPU fallback).
"""

from __future__ import annotations

from v4_ascend.backends import vendor
from v4_ascend.backends.base import Route

NAME = "mlu"
DEVICE_TYPE = "mlu"
DISPATCH_KEY = "PrivateUse1"


def unavailable_reason() -> str | None:
    return vendor.unavailable_reason("mlu", "torch_mlu_ops", "import torch_mlu before v4_ascend")


def register() -> None:
    from v4_ascend.backends.mlu import kernels

    kernels.TABLE.register()


def routes() -> dict[str, Route]:
    from v4_ascend.backends.mlu import kernels

    return kernels.TABLE.routes()
