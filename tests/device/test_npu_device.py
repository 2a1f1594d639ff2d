"""Vendor tests on real Ascend hardware: ``v4-ascend check --device npu`` per op against the reference.

Each op runs in a fresh ``python -m v4_ascend.cli`` process with ``TORCH_NPU_FALLBACK_CPU_DISABLE=1``
set before torch (and so torch_npu) is imported, so an op that would silently fall back to the CPU
fails instead. Skipped with the reason wherever no real NPU is present (no torch_npu, the simulated
device of the contract runs, or ``torch.npu`` reporting no device).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from v4_ascend import backends, library
from v4_ascend.testing import sim_device


def _no_real_npu_reason() -> str | None:
    if sim_device.device() is not None:
        return "vendor (skipped: the npu device of this run is simulated, not hardware)"
    if backends.privateuse1_name() != "npu":
        return "vendor (skipped: no NPU: torch_npu is not loaded, PrivateUse1 is " \
               f"'{backends.privateuse1_name()}')"
    if not torch.npu.is_available():
        return "vendor (skipped: torch.npu.is_available() is False)"
    return None


pytestmark = [pytest.mark.device, pytest.mark.skipif(_no_real_npu_reason() is not None,
                                                      reason=str(_no_real_npu_reason()))]


@pytest.mark.parametrize("op", sorted(library.ops()))
def test_npu_kernel_matches_reference_on_hardware(op):
    env = dict(os.environ, TORCH_NPU_FALLBACK_CPU_DISABLE="1")
    result = subprocess.run(
        [sys.executable, "-m", "v4_ascend.cli", "check", "--device", "npu", "--op", op],
        env=env, capture_output=True, text=True, timeout=900,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "TORCH_NPU_FALLBACK_CPU_DISABLE=1" in report and "SoC:" in report, report
