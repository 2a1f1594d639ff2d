"""Contract test of the MLU validation kit itself (tests/device/mlu_kit.py), on the simulated device.

A stand-in ``torch_mlu`` (written to a temporary directory) makes the simulated ``mlu`` device and the
torch_mlu_ops double what the kit finds, so the kit's whole path runs: environment set-up, version and
arch report, backend report, every case and the head-limit checks. It proves the kit's logic, not the
hardware (that needs a real MLU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from doubles import contract_marks

pytestmark = contract_marks("mlu")

ROOT = Path(__file__).resolve().parents[2]

# The kit imports v4_ascend first (no PrivateUse1 owner yet), then prepare_device imports this stand-in,
# which, like the real torch_mlu, claims PrivateUse1 as 'mlu' (here: the simulated device), names the
# device like an MLU590 and records the fallback setting torch_mlu would see.
STAND_IN = '''
import os, sys
__version__ = "1.34.1"
fallback_at_import = os.environ.get("ENABLE_FALLBACK_TO_CPU")
v4_ascend_first = "v4_ascend" in sys.modules
sys.path.insert(0, {tests!r})
from doubles import install_vendor_doubles
install_vendor_doubles("mlu").__version__ = {tmo_version!r}
import torch
from v4_ascend.testing import sim_device
os.environ["V4_ASCEND_SIM_DEVICE"] = "mlu"
sim_device.install("mlu")
torch.mlu.get_device_name = lambda index=0: "MLU590-M9 (simulated)"
print(f"stand-in torch_mlu imported with ENABLE_FALLBACK_TO_CPU={{fallback_at_import}}, "
      f"after v4_ascend: {{v4_ascend_first}}")
'''


def _run_kit(tmp_path, tmo_version="1.13.0"):
    package = tmp_path / "torch_mlu"
    package.mkdir()
    text = STAND_IN.format(tests=str(ROOT / "tests"), tmo_version=tmo_version)
    (package / "__init__.py").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("V4_ASCEND_")}
    env.update(PYTHONPATH=str(tmp_path), ENABLE_FALLBACK_TO_CPU="1")
    return subprocess.run([sys.executable, str(ROOT / "tests/device/mlu_kit.py")], capture_output=True, text=True,
                          env=env, timeout=600)


def test_contract_kit_disables_the_cpu_fallback_before_torch_mlu_and_passes(tmp_path):
    done = _run_kit(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stand-in torch_mlu imported with ENABLE_FALLBACK_TO_CPU=0, after v4_ascend: True" in done.stdout
    assert "ENABLE_FALLBACK_TO_CPU=0 (was '1')" in done.stdout
    assert "device: MLU590-M9 (simulated) (arch mtp_592)" in done.stdout
    assert "all MLU checks passed" in done.stdout
    # Calls outside a tmo route's limits are listed with their reason (here: V4-Pro-like mHC shapes, fp64).
    assert "call(s) ran the reference composition on the device: fused_mhc_post is built for" in done.stdout
    assert "moe_route: " in done.stdout and "not torch.float64" in done.stdout


def test_contract_kit_fails_on_an_unsupported_torch_mlu_ops(tmp_path):
    done = _run_kit(tmp_path, tmo_version="1.12.0")
    assert done.returncode == 1
    assert "FAIL: V4_ASCEND_BACKEND=mlu, but the mlu backend cannot load: unsupported torch_mlu_ops 1.12.0" in (
        done.stdout
    ), done.stdout + done.stderr
