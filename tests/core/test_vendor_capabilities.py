"""Both vendor capability tables (Ascend, Cambricon) share one structure and the same obligations:
a decided route with a reason for every declared op on every SoC / arch, per-call limits for every
vendor-fused route, and docs pages that embed exactly the table in code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from v4_ascend import library
from v4_ascend.backends.mlu import capabilities as mlu_caps
from v4_ascend.backends.npu import capabilities as npu_caps
from v4_ascend.backends.vendor import (
    ON_DEVICE,
    CapabilityTable,
    Decision,
    VendorKernels,
    VendorRoute,
    reference_route,
)
from v4_ascend.reference import moe as moe_ref

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


def _toy_table(check=None):
    """A one-vendor-op table over two targets, for the shared kernel gate."""
    routes = [
        VendorRoute("grouped_gemm", "toy_gmm", ("fast",), Decision.VENDOR, "exact: toy", "toy limits", check),
        *(reference_route(op, None, "toy reason") for op in library.ops() if op != "grouped_gemm"),
    ]
    return CapabilityTable("Toy", routes, ("fast", "slow"), str)


def test_kernel_gate_runs_the_body_inside_the_limits_and_counts_reference_fallbacks():
    target = {"now": "fast"}
    kernels = VendorKernels(_toy_table(lambda x, w, offsets: "too big" if x.shape[0] > 4 else None),
                            lambda device: target["now"])
    calls = []

    @kernels.kernel("grouped_gemm", moe_ref.check_grouped_gemm)
    def grouped_gemm(x, w, offsets):
        calls.append(x.shape[0])
        return moe_ref.grouped_gemm(x, w, offsets)

    w = torch.randn(2, 3, 5)
    small, big = (torch.randn(4, 5), torch.tensor([1, 4], dtype=torch.int32)), (
        torch.randn(6, 5), torch.tensor([2, 6], dtype=torch.int32))
    grouped_gemm(small[0], w, small[1])
    assert calls == [4] and kernels.reference_fallbacks() == {}
    torch.testing.assert_close(grouped_gemm(big[0], w, big[1]), moe_ref.grouped_gemm(big[0], w, big[1]))
    target["now"] = "slow"
    grouped_gemm(small[0], w, small[1])
    assert calls == [4]
    assert kernels.reference_fallbacks() == {
        ("grouped_gemm", "too big"): 1, ("grouped_gemm", "toy_gmm is used on fast only, not on slow"): 1}
    assert kernels.fallback_lines()[0].startswith("grouped_gemm: 1 call(s) ran the reference composition")
    with pytest.raises(ValueError, match="grouped_gemm"):  # validation comes first, whatever the route
        grouped_gemm(small[0], w, torch.tensor([1], dtype=torch.int32))


def test_kernel_gate_refuses_reference_routes_and_unimplemented_vendor_routes():
    kernels = VendorKernels(_toy_table(lambda *args: None), lambda device: "fast")
    with pytest.raises(ValueError, match="moe_route: the Toy table routes it to the reference composition"):
        kernels.kernel("moe_route", moe_ref.check_moe_route)
    with pytest.raises(RuntimeError, match=r"Toy: vendor-fused routes without a kernel: \['grouped_gemm'\]"):
        kernels.register()
