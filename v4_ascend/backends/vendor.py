"""What the Ascend and Cambricon backends share: PrivateUse1 ownership and vendor-module checks."""

from __future__ import annotations

import importlib.util
import sys

from v4_ascend.backends import privateuse1_name


def unavailable_reason(device: str, vendor_module: str, how_to: str) -> str | None:
    """Why the ``device`` backend cannot load in this process, or None."""
    owner = privateuse1_name()
    if owner != device:
        return f"PyTorch's PrivateUse1 device is '{owner}', not '{device}' ({how_to})"
    if vendor_module not in sys.modules and importlib.util.find_spec(vendor_module) is None:
        return f"{vendor_module} is not importable"
    return None
