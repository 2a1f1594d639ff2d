"""Both vendor capability tables (Ascend, Cambricon) share one structure and the same obligations:
a decided route with a reason for every declared op on every SoC / arch, per-call limits for every
vendor-fused route, and docs pages that embed exactly the table in code."""

from __future__ import annotations

from pathlib import Path

import pytest

from v4_ascend import library
from v4_ascend.backends.mlu import capabilities as mlu_caps
from v4_ascend.backends.npu import capabilities as npu_caps
from v4_ascend.backends.vendor import ON_DEVICE, Decision

DOCS = Path(__file__).resolve().parents[2] / "docs"
TABLES = {"npu": (npu_caps.CAPABILITIES, DOCS / "ascend.md"), "mlu": (mlu_caps.CAPABILITIES, DOCS / "cambricon.md")}


@pytest.fixture(params=sorted(TABLES))
def vendor(request):
    return TABLES[request.param]


def test_every_declared_op_has_exactly_one_route(vendor):
    table, _ = vendor
    assert set(table.routes) == set(library.ops())


def test_vendor_fused_routes_state_where_why_and_their_limits(vendor):
    table, _ = vendor
    for op, entry in table.routes.items():
        assert entry.why, op
        if entry.decision is Decision.VENDOR:
            assert entry.vendor_op and entry.targets and entry.check is not None and entry.limits, op
            assert entry.why.startswith("exact"), op
        else:
            assert entry.check is None and not entry.limits, op


def test_reference_routes_are_refused_everywhere_with_their_reason(vendor):
    table, _ = vendor
    for op, entry in table.routes.items():
        if entry.decision is Decision.REFERENCE:
            for target in (*table.columns, "no-such-target"):
                reason = table.not_supported_reason(op, target)
                assert reason == f"{entry.vendor_op or 'no vendor op'} not used: {entry.why}"
                route = table.describe(op, target)
                assert not route.served and route.reason.startswith(ON_DEVICE) and entry.why in route.reason


def test_vendor_routes_outside_their_targets_run_the_reference_on_the_device(vendor):
    table, _ = vendor
    for op in table.vendor_ops():
        entry = table.route(op)
        for target in table.columns:
            route = table.describe(op, target)
            assert route.served, (op, target)
            if target in entry.targets:
                assert entry.vendor_op in route.kernel and "vendor-fused" in route.kernel
            else:
                assert route.kernel == f"reference composition on the device ({table.label(target)})"
                assert table.not_supported_reason(op, target) in route.reason


def test_docs_route_table_is_the_one_in_code(vendor):
    table, doc = vendor
    markdown = table.markdown_table()
    assert markdown in doc.read_text(), f"{doc.name}: paste CAPABILITIES.markdown_table()"
    rows = markdown.splitlines()[2:]
    assert len(rows) == len(library.ops())
    for entry in table.routes.values():
        row = next(r for r in rows if r.startswith(f"| `{entry.op}` "))
        cells = [c.strip() for c in row.split("|")[3:3 + len(table.columns)]]
        assert cells == [entry.decision_on(t).value for t in table.columns], entry.op


def test_unknown_ops_name_the_vendor():
    with pytest.raises(KeyError, match="no Ascend route is recorded for op 'nope'"):
        npu_caps.CAPABILITIES.route("nope")
    with pytest.raises(KeyError, match="no Cambricon route is recorded for op 'nope'"):
        mlu_caps.CAPABILITIES.route("nope")
