"""prepare_device: the vendor's CPU fallback is off before the vendor module is imported, the process
restarts once when it was imported too early, and the vendor backend loads after v4_ascend was imported.

The subprocess tests put a stand-in vendor module on the path of a fresh interpreter; the stand-in
records the fallback variable it sees at import, as the real module reads it then."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from v4_ascend import backends
from v4_ascend.backends.prepare import VENDOR_SETUP
from v4_ascend.testing import sim_device

ROOT = Path(__file__).resolve().parents[2]
real_process = pytest.mark.skipif(sim_device.device() is not None, reason="needs a process without a simulated device")

# A torch_mlu stand-in that claims PrivateUse1 as 'mlu' the way the real one does on import (here through
# the simulated device, with the torch_mlu_ops test double standing in for tmo).
MLU_STAND_IN = '''
import os, sys
fallback_at_import = os.environ.get("ENABLE_FALLBACK_TO_CPU")
v4_ascend_first = "v4_ascend" in sys.modules
sys.path.insert(0, {tests!r})
from doubles import install_vendor_doubles
install_vendor_doubles("mlu")
from v4_ascend.testing import sim_device
sim_device.install("mlu")
'''

MLU_SCRIPT = '''
import sys
sys.path.insert(0, {root!r})
import v4_ascend
from v4_ascend import backends
before = (backends.privateuse1_name(), *backends.loaded())
backends.prepare_device("mlu", sys.argv)
import torch_mlu
backends.load()  # idempotent: nothing loads twice
print("before", *before)
print("torch_mlu saw ENABLE_FALLBACK_TO_CPU =", torch_mlu.fallback_at_import, "after v4_ascend:",
      torch_mlu.v4_ascend_first)
print("after", backends.privateuse1_name(), *backends.loaded())

'''

# A torch_npu stand-in that claims nothing: enough to see whether the variable was in force at import.
NPU_STAND_IN = '''
import os
fallback_at_import = os.environ.get("TORCH_NPU_FALLBACK_CPU_DISABLE")
'''

NPU_SCRIPT = '''
import sys
import torch_npu  # imported before prepare_device, as torch's autoload entry point does
print("run: torch_npu saw TORCH_NPU_FALLBACK_CPU_DISABLE =", torch_npu.fallback_at_import, flush=True)
sys.path.insert(0, {root!r})
from v4_ascend import backends
backends.prepare_device("npu", sys.argv)
'''


def _run(tmp_path, vendor: str, stand_in: str, script: str) -> subprocess.CompletedProcess:
    (tmp_path / vendor).mkdir()
    (tmp_path / vendor / "__init__.py").write_text(stand_in.format(tests=str(ROOT / "tests")))
    (tmp_path / "script.py").write_text(script.format(root=str(ROOT)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("V4_ASCEND_") and k != VENDOR_SETUP[
        "npu" if vendor == "torch_npu" else "mlu"].env}
    env["PYTHONPATH"] = str(tmp_path)
    return subprocess.run([sys.executable, str(tmp_path / "script.py")], capture_output=True, text=True, env=env,
                          timeout=300)


def test_mlu_fallback_is_off_before_torch_mlu_and_the_backend_loads_after_v4_ascend(tmp_path):
    done = _run(tmp_path, "torch_mlu", MLU_STAND_IN, MLU_SCRIPT)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    before, after = lines[0].split(), lines[2].split()
    assert before[:2] == ["before", "privateuseone"] and "mlu" not in before
    assert lines[1] == "torch_mlu saw ENABLE_FALLBACK_TO_CPU = 0 after v4_ascend: True"
    assert after == ["after", "mlu", *before[2:], "mlu"]  # loaded once, and never next to npu



def test_npu_restarts_once_when_torch_npu_was_imported_without_the_variable(tmp_path):
    done = _run(tmp_path, "torch_npu", NPU_STAND_IN, NPU_SCRIPT)
    runs = [line for line in done.stdout.splitlines() if line.startswith("run:")]
    # The restarted run sees the variable; the stand-in never claims PrivateUse1, so it then stops there.
    assert runs == ["run: torch_npu saw TORCH_NPU_FALLBACK_CPU_DISABLE = None",
                    "run: torch_npu saw TORCH_NPU_FALLBACK_CPU_DISABLE = 1"], done.stdout + done.stderr
    assert "--device npu: importing torch_npu left PyTorch's PrivateUse1 device named 'privateuseone'" in done.stderr


def test_a_second_vendor_is_refused_before_its_module_is_imported():
    script = (f"import sys, torch; sys.path.insert(0, {str(ROOT)!r}); from v4_ascend import backends; "
              "torch.utils.rename_privateuse1_backend('mlu'); backends.prepare_device('npu', [])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("V4_ASCEND_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert ("--device npu: PyTorch's PrivateUse1 device is already 'mlu' in this process (one vendor per process)"
            in done.stderr), done.stderr
    assert "torch_npu" not in done.stderr  # refused before any attempt to import it


@real_process
@pytest.mark.parametrize("device", ["npu", "mlu:0"])
def test_a_missing_vendor_module_is_an_error_naming_the_device(device, monkeypatch):
    setup = VENDOR_SETUP[device[:3]]
    monkeypatch.setenv(setup.env, "unset by the test")  # restored afterwards
    monkeypatch.setitem(sys.modules, setup.module, None)  # import fails as when it is not installed
    with pytest.raises(backends.VendorModuleMissing, match=f"--device {device[:3]} needs {setup.module}"):
        backends.prepare_device(device, ["-m", "v4_ascend.cli"])
    assert os.environ[setup.env] == setup.value


def test_cpu_needs_nothing(monkeypatch):
    before = dict(os.environ)
    backends.prepare_device("cpu", [])
    assert dict(os.environ) == before


@pytest.mark.device
@pytest.mark.skipif(sim_device.device() is None, reason="needs the simulated device (V4_ASCEND_SIM_DEVICE)")
def test_the_simulated_device_only_sets_the_variable_and_refuses_the_other_vendor(monkeypatch):
    simulated = sim_device.device().type
    setup = VENDOR_SETUP[simulated]
    monkeypatch.setenv(setup.env, "unset by the test")
    loaded = backends.loaded()
    backends.prepare_device(simulated, [])
    assert os.environ[setup.env] == setup.value and backends.loaded() == loaded
    other = "mlu" if simulated == "npu" else "npu"
    with pytest.raises(RuntimeError, match=f"--device {other}: this process simulates '{simulated}'"):
        backends.prepare_device(other, [])


@real_process
@pytest.mark.parametrize("command", ["check", "bench"])
def test_check_and_bench_refuse_a_vendor_device_without_its_module(command, monkeypatch, capsys):
    from v4_ascend.cli import main

    setup = VENDOR_SETUP["mlu"]
    monkeypatch.setenv(setup.env, "unset by the test")
    monkeypatch.setitem(sys.modules, setup.module, None)
    assert main([command, "--device", "mlu", "--op", "moe_route"]) == 2
    assert "--device mlu needs torch_mlu, which is not installed" in capsys.readouterr().out
