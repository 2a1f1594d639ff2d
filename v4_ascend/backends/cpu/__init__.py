"""CPU backend: the C++ kernels of ``v4_ascend._C`` (``TORCH_LIBRARY_IMPL(v4_ascend, CPU, ...)``).

Loading ``_C`` registers its kernels; ops it has no kernel for keep the reference on CPU tensors.
"""

from __future__ import annotations

import importlib
import importlib.util

from v4_ascend import library
from v4_ascend.backends.base import Route

NAME = "cpu"
DEVICE_TYPE = "cpu"
DISPATCH_KEY = "CPU"

_extension = None


def unavailable_reason() -> str | None:
    try:
        found = importlib.util.find_spec("v4_ascend._C") is not None
    except ImportError as error:  # a blocked or broken import is as absent as a missing file
        return f"the C++ extension v4_ascend._C cannot be imported ({error})"
    if not found:
        return "the C++ extension v4_ascend._C is not built (pip install --no-build-isolation .)"
    return None


def register() -> None:
    global _extension
    _extension = importlib.import_module("v4_ascend._C")
    _extension.cpu_isa()  # a bad V4_ASCEND_CPU_ISA raises ValueError here, not at the first kernel call


def extension():
    """The loaded ``v4_ascend._C`` module (None before :func:`register`)."""
    return _extension


def routes() -> dict[str, Route]:
    info = _extension.kernel_info() if _extension is not None else {}
    isa = _extension.cpu_isa() if _extension is not None else "n/a"
    if _extension is not None and isa != _extension.cpu_isa_detected():
        isa += f" (V4_ASCEND_CPU_ISA; the CPU has {_extension.cpu_isa_detected()})"
    return {
        name: Route(f"{info[name]} [{isa}]", "")
        if name in info
        else Route(None, "no C++ kernel for this op yet: the reference serves CPU tensors")
        for name in library.ops()
    }
