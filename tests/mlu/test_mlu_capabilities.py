"""The Cambricon capability table: arch detection, the per-call limits of the tmo routes and the
Cambricon-specific reasons (the structure shared with Ascend is tested in
tests/core/test_vendor_capabilities.py)."""

from __future__ import annotations

import pytest
import torch

from v4_ascend.backends.mlu import capabilities as caps
from v4_ascend.backends.mlu import tmo

TABLE = caps.CAPABILITIES
TMO_ROUTED = ["grouped_gemm", "grouped_gemm_masked", "mhc_post", "mhc_pre", "moe_route", "sparse_attn"]


def test_the_tmo_routes_are_the_ones_implemented_on_mtp_592_and_newer():
    assert sorted(TABLE.vendor_ops()) == TMO_ROUTED
    for op in TMO_ROUTED:
        assert TABLE.route(op).targets == ("mtp_592", "mtp_613", caps.UNKNOWN)


def test_mlu370_runs_every_op_as_the_reference_composition_with_its_reason():
    for op in TABLE.routes:
        reason = TABLE.not_supported_reason(op, "mtp_372")
        assert reason is not None
        if op in TMO_ROUTED:
            assert reason == caps.MLU370_REASON


def test_an_unknown_arch_gets_the_tmo_routes_and_says_so():
    route = TABLE.describe("grouped_gemm", caps.UNKNOWN)
    assert "unknown MLU arch (mtp_592 routes assumed)" in route.kernel and "vendor-fused" in route.kernel
    assert "unknown" not in TABLE.describe("grouped_gemm", "mtp_592").kernel


def _empty(*shape, dtype=torch.float16):
    return torch.empty(*shape, dtype=dtype)


def test_per_call_limits():
    arch = "mtp_592"
    q, kv, idx = _empty(2, 4, 8), _empty(5, 8), torch.zeros(2, 3, dtype=torch.int32)
    assert TABLE.not_supported_reason("sparse_attn", arch, q, kv, idx, None, 0.5) is None
    assert "empty KV pool" in TABLE.not_supported_reason("sparse_attn", arch, q, _empty(0, 8), idx, None, 0.5)
    assert "not torch.float64" in TABLE.not_supported_reason(
        "sparse_attn", arch, q.double(), kv.double(), idx, None, 0.5)
    logits = torch.empty(3, 16)
    assert TABLE.not_supported_reason("moe_route", arch, logits, 4, 1.0) is None
    assert "not torch.float64" in TABLE.not_supported_reason("moe_route", arch, logits.double(), 4, 1.0)
    assert "fp32 bias, not torch.float64" in TABLE.not_supported_reason(
        "moe_route", arch, logits, 4, 1.0, torch.empty(16, dtype=torch.float64))
    streams, f = _empty(2, 4, 4096), _empty(2, 4096)
    post, comb = torch.empty(2, 4), torch.empty(2, 4, 4)
    assert TABLE.not_supported_reason("mhc_post", arch, f, streams, post, comb) is None
    pro = TABLE.not_supported_reason("mhc_post", arch, _empty(2, 7168), _empty(2, 4, 7168), post, comb)
    assert "HC = 4, D = 4096 only" in pro and "D = 7168" in pro
    x = _empty(3, 4, 16)
    assert TABLE.not_supported_reason("mhc_pre", arch, x, None, None, None) is None
    assert "hc_mult = 4 only, got n = 6" in TABLE.not_supported_reason("mhc_pre", arch, _empty(3, 6, 16), None,
                                                                      None, None)
    gmm = (_empty(6, 8), _empty(2, 4, 8), torch.zeros(2, dtype=torch.int32))
    assert TABLE.not_supported_reason("grouped_gemm", arch, *gmm) is None
    assert "nothing for group_gemm" in TABLE.not_supported_reason("grouped_gemm", arch, _empty(0, 8), *gmm[1:])


def test_routes_name_the_v4_specific_conditions():
    assert "input_ids" in TABLE.route("moe_route").why and "route_scale" in TABLE.route("moe_route").why
    assert "lower expert index" in TABLE.route("moe_route").why and "by keyword" in TABLE.route("moe_route").limits
    assert "D = 4096 and HC = 4 only" in TABLE.route("mhc_post").limits
    assert "column j of comb" in TABLE.route("mhc_post").why
    assert "learnable_sink" in TABLE.route("sparse_attn").vendor_op and "flash_attention" in TABLE.route(
        "sparse_attn").why
    assert "128" in TABLE.route("sparse_attn").limits and "256 with bf16 KV" in TABLE.route("sparse_attn").limits
    assert "rope_at_front=False" in TABLE.route("indexer_topk").why
    assert "no SwiGLU clamp" in TABLE.route("moe_ffn").why and "no SwiGLU clamp" in TABLE.route("moe_swiglu").why
    assert TABLE.route("engram_hash").vendor_op is None and TABLE.route("engram_lookup").vendor_op is None


@pytest.mark.parametrize(
    "name, arch",
    [
        ("MLU590-M9", "mtp_592"), ("MLU580", "mtp_592"), ("Cambricon MLU590-M9D", "mtp_592"),
        ("MLU370-X8", "mtp_372"), ("MLU370-S4", "mtp_372"), ("MLU690", "mtp_613"),
        ("", caps.UNKNOWN), (None, caps.UNKNOWN), ("Ascend910B", caps.UNKNOWN),
    ],
)
def test_arch_from_device_name(name, arch):
    assert caps.arch_from_name(name) == arch


def test_heads_per_single_query_call_follow_the_documented_limit():
    assert caps.sqcka_heads_per_call(torch.float16) == 128
    assert caps.sqcka_heads_per_call(torch.float32) == 128
    assert caps.sqcka_heads_per_call(torch.bfloat16) == 256


def test_cambricon_docs_name_the_supported_releases():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "cambricon.md").read_text()
    for name, versions in tmo.SUPPORTED.items():
        assert all(f"**{v}" in text for v in versions), name
