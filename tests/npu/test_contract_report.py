"""Contract test: ``backend_report()`` on the simulated npu device names every declared op's route and why."""

from __future__ import annotations

from doubles import contract_marks

import v4_ascend
from v4_ascend import library
from v4_ascend.backends.npu import capabilities
from v4_ascend.backends.npu.capabilities import Soc
from v4_ascend.backends.vendor import ON_DEVICE, Decision

TABLE = capabilities.CAPABILITIES

pytestmark = contract_marks("npu")


def _npu_rows():
    return {row.op: row for row in v4_ascend.backend_report().rows if row.device == "npu"}


def test_contract_backend_report_lists_every_declared_op_on_npu_with_route_and_reason():
    rows = _npu_rows()  # the simulated chip is an A2 (Ascend910B2)
    assert set(rows) == set(library.ops())
    for op, row in rows.items():
        entry = TABLE.route(op)
        if entry.decision is Decision.VENDOR:
            assert row.backend == "npu", op
            assert entry.vendor_op in row.kernel and "A2 (910B): vendor-fused" in row.kernel, row.kernel
            assert ON_DEVICE in row.kernel and row.reason.startswith("exact"), row
        else:
            assert row.backend == "reference", op
            npu_why = [why for why in row.why_not_others if why.startswith("npu: ")]
            assert npu_why == [f"npu: {ON_DEVICE}: {entry.vendor_op or 'no vendor op'} not used: {entry.why}"], row
    text = str(v4_ascend.backend_report())
    assert all(op in text for op in library.ops())


def test_contract_backend_report_on_950_says_why_the_a2_a3_routes_are_not_used(monkeypatch):
    from v4_ascend.backends.npu import kernels

    monkeypatch.setattr(kernels, "soc", lambda: Soc.A5)
    for op, row in _npu_rows().items():
        if op in TABLE.vendor_ops():
            assert row.backend == "npu" and row.kernel == "reference composition on the device (950PR/DT)", row
            assert "used on A2 (910B), A3 (910C) only, not on 950PR/DT" in row.reason, row
