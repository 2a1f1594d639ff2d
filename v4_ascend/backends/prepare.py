"""Preparing a process for a vendor device (``v4-ascend check/bench --device npu|mlu``, the device kits).

Both vendors run aten ops that lack a device kernel silently on the CPU unless an environment variable,
read when the vendor module is imported, says otherwise: ``TORCH_NPU_FALLBACK_CPU_DISABLE=1`` for
torch_npu, ``ENABLE_FALLBACK_TO_CPU=0`` for torch_mlu. A validation run must fail loudly instead, so
:func:`prepare_device` puts the variable in force *before* the vendor module is imported. When the
module was already imported without it (``import torch`` imports torch_npu through its autoload entry
point), the process restarts itself once with the variable set.

Then it imports the vendor module, which claims PyTorch's PrivateUse1 slot; v4_ascend may already be
imported by then (its backends loaded while the slot was unclaimed), so the backends are loaded again
(:func:`v4_ascend.backends.load` is idempotent and never loads two vendors).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VendorSetup:
    module: str  # the Python module that claims PrivateUse1 for this device
    env: str  # the variable that turns the vendor's silent CPU fallback into an error
    value: str
    how_to: str  # where a user gets the module


VENDOR_SETUP = {
    "npu": VendorSetup("torch_npu", "TORCH_NPU_FALLBACK_CPU_DISABLE", "1",
                       "pip install torch-npu matching this torch, with CANN set up (docs/ascend.md)"),
    "mlu": VendorSetup("torch_mlu", "ENABLE_FALLBACK_TO_CPU", "0",
                       "run inside the Cambricon container (docs/cambricon.md)"),
}


UNCLAIMED = "privateuseone"  # PrivateUse1's name before a vendor module renames it


class VendorModuleMissing(RuntimeError):
    """The vendor module of the requested device is not installed."""


def prepare_device(device: str | torch.device, restart_argv: Sequence[str]) -> None:
    """Make this process ready to run v4_ascend on ``device`` with no silent CPU fallback.

    For ``npu`` / ``mlu``: set the vendor's fallback variable (restarting ``python *restart_argv`` once
    when the vendor module was imported without it), import the vendor module, check that it claimed
    PrivateUse1 under the device's name, and load the v4_ascend backends again. Other devices (cpu, cuda)
    need nothing. On the simulated device (``V4_ASCEND_SIM_DEVICE``) only the variable is set: there is
    no vendor runtime to configure.

    Raises:
        VendorModuleMissing: the device's vendor module is not installed (the message names the device).
        RuntimeError: another vendor already owns PrivateUse1, the vendor module did not claim it as the
            device, or the simulated device of this process is another one.
    """
    from v4_ascend import backends
    from v4_ascend.testing import sim_device

    # A string, not torch.device(): "mlu" is not a device type until torch_mlu has claimed PrivateUse1.
    device_type = device.type if isinstance(device, torch.device) else device.partition(":")[0].strip().lower()
    setup = VENDOR_SETUP.get(device_type)
    if setup is None:
        return
    simulated = sim_device.device()
    if simulated is not None:
        if simulated.type != device_type:
            raise RuntimeError(f"--device {device_type}: this process simulates '{simulated.type}' "
                               f"({sim_device.ENV}={simulated.type})")
        os.environ[setup.env] = setup.value
        return
    claimed = backends.privateuse1_name()
    if claimed not in (UNCLAIMED, device_type):  # never a second vendor in one process
        raise RuntimeError(f"--device {device_type}: PyTorch's PrivateUse1 device is already '{claimed}' in this "
                           "process (one vendor per process)")
    if os.environ.get(setup.env) != setup.value:
        os.environ[setup.env] = setup.value
        if sys.modules.get(setup.module) is not None:  # imported without the variable: only a fresh process obeys it
            os.execv(sys.executable, [sys.executable, *restart_argv])
    try:
        importlib.import_module(setup.module)
    except ModuleNotFoundError as error:
        if error.name != setup.module:
            raise
        raise VendorModuleMissing(f"--device {device_type} needs {setup.module}, which is not installed "
                                  f"({setup.how_to})") from None
    owner = backends.privateuse1_name()
    if owner != device_type:
        raise RuntimeError(f"--device {device_type}: importing {setup.module} left PyTorch's PrivateUse1 device "
                           f"named '{owner}', not '{device_type}'")
    backends.load()
