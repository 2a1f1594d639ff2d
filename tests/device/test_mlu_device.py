"""MLU hardware tier: runs the validation kit (tests/device/mlu_kit.py) in its own process.

The kit needs a process where ``ENABLE_FALLBACK_TO_CPU=0`` is set before torch_mlu is imported and
``V4_ASCEND_BACKEND=mlu`` is in force; this test process may have imported torch_mlu already and runs
with other settings, hence the subprocess. Without
torch_mlu or an MLU the kit exits 2 and this test is skipped with the kit's reason (never a fake pass).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

KIT = Path(__file__).with_name("mlu_kit.py")

pytestmark = pytest.mark.device


def test_mlu_device_kit():
    env = {k: v for k, v in os.environ.items() if k not in ("V4_ASCEND_SIM_DEVICE", "V4_ASCEND_BACKEND")}
    done = subprocess.run([sys.executable, str(KIT)], capture_output=True, text=True, env=env, timeout=3600)
    output = done.stdout + done.stderr
    if done.returncode == 2:
        pytest.skip(f"vendor (skipped): {done.stdout.strip().splitlines()[-1]}")
    assert done.returncode == 0, output
