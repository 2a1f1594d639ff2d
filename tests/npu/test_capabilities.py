"""The Ascend capability table: SoC detection, per-call limits and a route for every op of ops.md."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from v4_ascend import library
from v4_ascend.backends.npu import capabilities as cap
from v4_ascend.backends.npu.capabilities import Decision, Soc

DOC = Path(__file__).resolve().parents[2] / "docs" / "ascend.md"
OPS_MD = (  # every op that ops.md names
    "sparse_attn", "kv_compress", "indexer_topk", "engram_hash", "engram_lookup", "engram_gate", "moe_route",
    "grouped_gemm", "grouped_gemm_masked", "moe_ffn", "mhc_sinkhorn", "mhc_pre", "mhc_post", "mhc_head",
    "fp8_quant", "fp4_quant",
)


@pytest.mark.parametrize(
    "version, soc",
    [(220, Soc.A2), (225, Soc.A2), (250, Soc.A3), (256, Soc.A3), (260, Soc.A5), (104, Soc.OTHER), (202, Soc.OTHER),
     (-1, Soc.OTHER)],
)
def test_soc_from_version_follows_c10_npu_socversion(version, soc):
    assert cap.soc_from_version(version) is soc


@pytest.mark.parametrize(
    "name, soc",
    [("Ascend910B2", Soc.A2), ("Ascend910B4_1", Soc.A2), ("Ascend910_9392", Soc.A3), ("Ascend910_9362", Soc.A3),
     ("Ascend950PR", Soc.A5), ("Ascend950DT", Soc.A5), ("Ascend910A", Soc.OTHER), ("Ascend310P3", Soc.OTHER)],
)
def test_soc_from_device_name(name, soc):
    assert cap.soc_from_name(name) is soc


def test_detect_soc_falls_back_to_the_device_name_for_unknown_versions():
    module = SimpleNamespace(npu=SimpleNamespace(get_soc_version=lambda: 999, get_device_name=lambda: "Ascend950PR"))
    assert cap.detect_soc(module) is Soc.A5
    module.npu.get_soc_version = lambda: 251
    assert cap.detect_soc(module) is Soc.A3


def test_every_op_of_ops_md_and_every_declared_op_has_a_route():
    assert set(OPS_MD) <= set(cap.ROUTES)
    assert set(library.ops()) <= set(cap.ROUTES)
    for entry in cap.ROUTES.values():
        assert entry.why, entry.op
        if entry.decision is Decision.VENDOR:
            assert entry.socs and entry.check is not None and entry.limits, entry.op


def _gmm_args(dtype=torch.bfloat16, groups=4, K=64):
    x, w = torch.empty(8, K, dtype=dtype), torch.empty(groups, 16, K, dtype=dtype)
    return x, w, torch.zeros(groups, dtype=torch.int32)


@pytest.mark.parametrize("op", ["grouped_gemm", "grouped_gemm_masked"])
def test_grouped_gemm_limits(op):
    assert cap.not_supported_reason(op, Soc.A2, *_gmm_args()) is None
    assert cap.not_supported_reason(op, Soc.A3, *_gmm_args(torch.float32, 1024, 65535)) is None
    assert "float64" in cap.not_supported_reason(op, Soc.A2, *_gmm_args(torch.float64))
    assert "at most 1024 groups, got 1025" in cap.not_supported_reason(op, Soc.A3, *_gmm_args(groups=1025))
    assert "K < 65536" in cap.not_supported_reason(op, Soc.A2, *_gmm_args(K=65536))
    assert "not for 950PR/DT" in cap.not_supported_reason(op, Soc.A5, *_gmm_args())
    assert "not for other Ascend SoC" in cap.not_supported_reason(op, Soc.OTHER, *_gmm_args())


@pytest.mark.parametrize(
    "op, phrase",
    [("sparse_attn", "one KV pool per call"), ("moe_route", "sqrt(softplus"), ("indexer_topk", "no ratio argument"),
     ("mhc_pre", "950PR/DT only"), ("fp4_quant", "no FP4 e2m1 on A2/A3"), ("moe_ffn", "npu_swiglu has no clamp")],
)
def test_not_exact_vendor_ops_are_refused_with_their_reason_on_every_soc(op, phrase):
    for soc in Soc:
        reason = cap.not_supported_reason(op, soc)
        assert reason is not None and phrase in reason and "not used" in reason


def test_route_table_of_the_docs_is_the_one_in_code():
    assert cap.markdown_table() in DOC.read_text(), "docs/ascend.md: paste capabilities.markdown_table()"
    rows = cap.markdown_table().splitlines()[2:]
    assert len(rows) == len(cap.ROUTES)
    gmm = next(r for r in rows if r.startswith("| `grouped_gemm` "))
    assert gmm.count("vendor-fused") == 2 and "reference composition" in gmm  # A2, A3 fused; 950 not documented
