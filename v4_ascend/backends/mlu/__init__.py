"""Cambricon backend: ``PrivateUse1`` kernels when torch_mlu owns the slot (device ``mlu``).

Kernels call torch_mlu_ops (tmo, through the version-pinned adapter :mod:`.tmo`) where their semantics
match V4 exactly and otherwise run the reference composition on the device (never a CPU fallback).
:mod:`.capabilities` holds the per-op, per-arch routes and their reasons.
"""

from __future__ import annotations

import torch

from v4_ascend.backends import vendor
from v4_ascend.backends.base import Route

NAME = "mlu"
DEVICE_TYPE = "mlu"
DISPATCH_KEY = "PrivateUse1"


def unavailable_reason() -> str | None:
    """Why the MLU backend cannot load here: another PrivateUse1 owner, no tmo, or an unsupported release."""
    reason = vendor.unavailable_reason("mlu", "torch_mlu_ops", "import torch_mlu before v4_ascend")
    if reason is not None:
        return reason
    from v4_ascend.backends.mlu import tmo

    return tmo.version_problem()


def register() -> None:
    from v4_ascend.backends.mlu import kernels

    kernels.KERNELS.register()


def routes() -> dict[str, Route]:
    """Per declared op, its route on this process's MLU arch (from the capability table)."""
    from v4_ascend.backends.mlu import capabilities, kernels

    return kernels.KERNELS.routes(capabilities.device_arch(torch.device(DEVICE_TYPE, 0)))
