"""Contract test: ``backend_report()`` on the simulated npu device names every declared op's route and why."""

from __future__ import annotations

import sys

import pytest

import v4_ascend
from v4_ascend import backends, library
from v4_ascend.backends.npu import capabilities
from v4_ascend.backends.npu.capabilities import Decision

pytestmark = [
    pytest.mark.contract,
    pytest.mark.skipif(
        backends.privateuse1_name() != "npu" or "npu" not in backends.loaded()
        or not hasattr(sys.modules.get("torch_npu"), "calls"),
        reason="contract test: needs the simulated npu device with the torch_npu test double "
        "(run with V4_ASCEND_SIM_DEVICE=npu)",
    ),
]


def test_contract_backend_report_lists_every_declared_op_on_npu_with_route_and_reason():
    report = v4_ascend.backend_report()
    rows = {row.op: row for row in report.rows if row.device == "npu"}
    assert set(rows) == set(library.ops())
    for op, row in rows.items():
        entry = capabilities.route(op)
        if entry.decision is Decision.VENDOR:  # the simulated chip is an A2 (Ascend910B2)
            assert row.backend == "npu", op
            assert entry.vendor_op in row.kernel and "detected A2 (910B): vendor-fused" in row.kernel, row.kernel
            assert "reference composition runs on the device" in row.kernel, row.kernel
        else:
            assert row.backend == "reference", op
            npu_why = [why for why in row.why_not_others if why.startswith("npu: ")]
            assert npu_why and "runs on the device" in npu_why[0] and entry.why in npu_why[0], row
    text = str(report)
    assert all(op in text for op in library.ops())
