"""The simulated PrivateUse1 device: dispatch reaches vendor kernels, or the reference on the device.

These run only in the ``V4_ASCEND_SIM_DEVICE=npu|mlu`` processes of ``make test``.
"""

from __future__ import annotations

import sys

import pytest
import torch

import v4_ascend
from v4_ascend import backends, library
from v4_ascend.testing import cases, tolerance
from v4_ascend.testing.sim_device import SimTensor

pytestmark = [
    pytest.mark.device,
    pytest.mark.skipif(
        backends.privateuse1_name() not in ("npu", "mlu"),
        reason="needs the simulated vendor device (V4_ASCEND_SIM_DEVICE=npu|mlu, run by `make test`)",
    ),
]

VENDOR_MODULE = {"npu": "torch_npu", "mlu": "torch_mlu_ops"}


def test_tensors_live_on_the_simulated_device(device):
    x = torch.randn(3, 4).to(device)
    assert isinstance(x, SimTensor) and x.device == device
    y = (x @ x.T).softmax(-1)
    assert y.device == device
    torch.testing.assert_close(y.cpu(), (x.cpu() @ x.cpu().T).softmax(-1))


def test_torch_accelerator_sees_the_device(device):
    assert torch.accelerator.is_available()
    assert torch.accelerator.current_accelerator().type == device.type
    assert torch.accelerator.device_count() == 1


def test_vendor_kernel_is_called_for_device_tensors(device):
    vendor = sys.modules[VENDOR_MODULE[device.type]]
    assert device.type in backends.loaded()
    case = cases.generate("grouped_gemm", device, torch.float32)[0]
    before = sum(vendor.calls.values())
    out = v4_ascend.ops.grouped_gemm(*case.args, **case.kwargs)
    assert sum(vendor.calls.values()) == before + 1
    assert out.device == device
    expected = library.ops()["grouped_gemm"].reference(*tolerance.upcast(case.args))
    tolerance.assert_close(out, expected, torch.float32)


def test_op_without_vendor_kernel_runs_reference_on_the_device(device):
    name = "sparse_attn"
    if torch._C._dispatch_has_kernel_for_dispatch_key(library.ops()[name].qualname, "PrivateUse1"):
        pytest.skip(f"{name} has a {device.type} kernel now; the fallback is covered by another op")
    case = cases.generate(name, device, torch.float32)[0]
    out, lse = v4_ascend.ops.sparse_attn(*case.args, **case.kwargs)
    assert out.device == device and lse.device == device
    expected = library.ops()[name].reference(*tolerance.upcast(case.args), **tolerance.upcast(case.kwargs))
    tolerance.assert_close(out, expected[0], torch.float32)
    assert v4_ascend.report.serving_backend(name, device.type)[0] == "reference"
