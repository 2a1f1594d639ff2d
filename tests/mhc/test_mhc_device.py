"""Every mhc case on the device under test (the simulated npu/mlu in sim runs) against the CPU reference."""

from __future__ import annotations

import pytest
import torch
from torch.utils._pytree import tree_map

from v4_ascend import library
from v4_ascend.testing import cases
from v4_ascend.testing.tolerance import assert_close

OPS = ["mhc_sinkhorn", "mhc_pre", "mhc_post", "mhc_head"]


def _to(value, device):
    return tree_map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, value)


@pytest.mark.device
@pytest.mark.parametrize("op", OPS)
def test_device_matches_cpu_reference(op, device):
    overload, reference = library.ops()[op].overload, library.ops()[op].reference
    for dtype in cases.case_sets()[op].dtypes:
        for case in cases.generate(op, "cpu", dtype):
            got = overload(*_to(case.args, device), **_to(case.kwargs, device))
            want = reference(*case.args, **case.kwargs)
            for g, w in zip(*(o if isinstance(o, tuple) else (o,) for o in (got, want))):
                assert g.device.type == device.type
                # copy_ into a host tensor (the simulated device's .cpu() keeps its wrapper)
                assert_close(torch.empty_like(w).copy_(g), w, w.dtype if w.is_floating_point() else dtype, f"{op} {case.name} {dtype}")
