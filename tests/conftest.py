"""Test policy: one thread, fresh random inputs per test with the seed printed on failure.

``V4_ASCEND_SIM_DEVICE=npu|mlu`` runs select the device tests (marker ``device``) on the simulated
device; the vendor test doubles (``tests/doubles``) are installed before v4_ascend is imported so the
vendor backend loads against them.
"""

from __future__ import annotations

import os
import random
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from doubles import install_vendor_doubles  # noqa: E402

SIM_DEVICE = os.environ.get("V4_ASCEND_SIM_DEVICE", "").strip().lower()
if SIM_DEVICE:
    install_vendor_doubles(SIM_DEVICE)

import v4_ascend  # noqa: E402,F401

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "device: runs on the target device (plain runs: CPU; sim runs: npu/mlu)")
    config.addinivalue_line("markers", "contract: checks our calls into a vendor test double, not vendor numerics")


@pytest.fixture(autouse=True)
def seed(request):
    """A fresh seed per test (``V4_ASCEND_SEED`` pins it); printed, so a failure shows it."""
    value = int(os.environ.get("V4_ASCEND_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(value)
    random.seed(value)
    print(f"seed={value} (rerun with V4_ASCEND_SEED={value})")
    return value


@pytest.fixture
def device():
    """The device under test: the simulated vendor device in sim runs, else the CPU."""
    return torch.device(SIM_DEVICE, 0) if SIM_DEVICE else torch.device("cpu")
