"""Every op's cases on the device under test against the host reference (what `v4-ascend check` runs).

Plain runs check the CPU kernels; the simulated npu/mlu runs check that each op, vendor-routed or the
reference composition on the device, gives the reference's answer there.
"""

from __future__ import annotations

import pytest

from v4_ascend import library
from v4_ascend.testing import cases, check


@pytest.mark.device
@pytest.mark.parametrize("op", sorted(library.ops()))
def test_serving_kernel_matches_reference_on_device(op, device, seed):
    for dtype in cases.case_sets()[op].dtypes:
        failures = [r for r in check.check_op(op, device, dtype, seed) if not r.passed]
        assert not failures, "\n".join(f"{r.case} {r.dtype}: max error {r.max_error:.3e} {r.error}" for r in failures)
