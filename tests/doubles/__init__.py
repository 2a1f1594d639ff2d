"""Test doubles of the vendor modules, for *contract tests* on the simulated device.

A double implements the documented semantics of each vendor op we call, independently of
v4_ascend's references, and records every call (``calls``) so tests can assert our argument mapping.
They prove our wiring, never the vendor's numerics.
"""

from __future__ import annotations

import importlib
import sys

_MODULES = {"npu": ("torch_npu", "doubles.torch_npu"), "mlu": ("torch_mlu_ops", "doubles.torch_mlu_ops")}


def install_vendor_doubles(device: str):
    """Put the double of ``device``'s vendor module into ``sys.modules`` under the real name."""
    name, path = _MODULES[device]
    double = importlib.import_module(path)
    sys.modules[name] = double
    return double


def contract_marks(device: str) -> list:
    """The marks of a contract-test module: ``contract``, skipped with the reason unless this process runs
    the simulated ``device`` with its vendor double installed."""
    import os

    import pytest

    name, _ = _MODULES[device]
    active = os.environ.get("V4_ASCEND_SIM_DEVICE", "").strip().lower() == device and hasattr(
        sys.modules.get(name), "calls"
    )
    return [
        pytest.mark.contract,
        pytest.mark.skipif(
            not active,
            reason=f"contract test: needs the simulated {device} device and the {name} test double "
            f"(run with V4_ASCEND_SIM_DEVICE={device}; `make test` does)",
        ),
    ]
