"""Triton backend (CUDA key; triton-ascend / Triton-MLU reuse the same kernels through PrivateUse1).

No Triton kernel ships in this release, so the backend reports itself unavailable rather than loading
an empty table.
"""

from __future__ import annotations

import importlib.util

from v4_ascend import library
from v4_ascend.backends.base import Route

NAME = "triton"
DEVICE_TYPE = "cuda"
DISPATCH_KEY = "CUDA"

_NO_KERNELS = "no Triton kernels are implemented yet"


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return f"triton is not installed; {_NO_KERNELS}"
    return _NO_KERNELS


def register() -> None:
    raise RuntimeError(_NO_KERNELS)


def routes() -> dict[str, Route]:
    return {name: Route(None, _NO_KERNELS) for name in library.ops()}
