"""The Ascend capability table: SoC detection, the grouped-GEMM limits and the Ascend-specific reasons
(the structure shared with Cambricon is tested in tests/core/test_vendor_capabilities.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from v4_ascend.backends.npu import capabilities as cap
from v4_ascend.backends.npu.capabilities import Soc

TABLE = cap.CAPABILITIES


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


def test_only_the_grouped_gemms_are_vendor_fused_on_a2_and_a3():
    assert sorted(TABLE.vendor_ops()) == ["grouped_gemm", "grouped_gemm_masked"]
    for op in TABLE.vendor_ops():
        assert TABLE.route(op).targets == (Soc.A2, Soc.A3)


def _gmm_args(dtype=torch.bfloat16, groups=4, K=64):
    x, w = torch.empty(8, K, dtype=dtype), torch.empty(groups, 16, K, dtype=dtype)
    return x, w, torch.zeros(groups, dtype=torch.int32)


@pytest.mark.parametrize("op", ["grouped_gemm", "grouped_gemm_masked"])
def test_grouped_gemm_limits(op):
    assert TABLE.not_supported_reason(op, Soc.A2, *_gmm_args()) is None
    assert TABLE.not_supported_reason(op, Soc.A3, *_gmm_args(torch.float32, 1024, 65535)) is None
    assert "float64" in TABLE.not_supported_reason(op, Soc.A2, *_gmm_args(torch.float64))
    assert "at most 1024 groups, got 1025" in TABLE.not_supported_reason(op, Soc.A3, *_gmm_args(groups=1025))
    assert "K < 65536" in TABLE.not_supported_reason(op, Soc.A2, *_gmm_args(K=65536))
    assert "used on A2 (910B), A3 (910C) only, not on 950PR/DT" in TABLE.not_supported_reason(op, Soc.A5)
    assert "not on other Ascend SoC" in TABLE.not_supported_reason(op, Soc.OTHER)


@pytest.mark.parametrize(
    "op, phrase",
    [("sparse_attn", "one KV pool per call"), ("moe_route", "sqrt(softplus"), ("indexer_topk", "no ratio argument"),
     ("mhc_pre", "950PR/DT only"), ("fp4_quant", "no FP4 e2m1 on A2/A3"), ("moe_ffn", "npu_swiglu has no clamp"),
     ("moe_swiglu", "no clamp"), ("moe_dispatch", "-1 slots"), ("kv_compress_pool", "no pooling-only entry"),
     ("fp8_weight_quant", "128x128"), ("hadamard_rotate", "no standalone torch_npu op")],
)
def test_not_exact_vendor_ops_are_refused_with_their_reason_on_every_soc(op, phrase):
    for soc in Soc:
        reason = TABLE.not_supported_reason(op, soc)
        assert reason is not None and phrase in reason and "not used" in reason
