"""The MLU capability table (plain run): every op of the contract has a route per arch, with reasons."""

from __future__ import annotations

import pytest
import torch

from v4_ascend import library
from v4_ascend.backends.mlu import capabilities as caps

# Every operator of the contract (ops.md), declared on this branch or not.
CONTRACT_OPS = {
    "sparse_attn", "kv_compress", "indexer_topk", "engram_hash", "engram_lookup", "engram_gate", "moe_route",
    "grouped_gemm", "grouped_gemm_masked", "moe_ffn", "mhc_sinkhorn", "mhc_pre", "mhc_post", "mhc_head",
    "fp8_quant", "fp4_quant",
}


def test_table_covers_every_contract_op_and_every_declared_op():
    assert set(caps.TABLE) == CONTRACT_OPS
    assert set(library.ops()) <= set(caps.TABLE)


def test_every_op_has_a_route_and_a_reason_on_every_arch():
    full = caps.table()
    for op, per_arch in full.items():
        assert set(per_arch) == set(caps.ARCHES)
        for arch, route in per_arch.items():
            assert route.kernel and route.reason, (op, arch)


def test_mlu370_is_unsupported_for_every_op_with_its_reason():
    for op in caps.TABLE:
        route = caps.route(op, "mtp_372")
        assert route.kernel == "reference composition on the device (mtp_372)"
        assert "MLU370 (mtp_372) is not supported" in route.reason


@pytest.mark.parametrize("arch", ["mtp_592", "mtp_613", caps.UNKNOWN])
def test_supported_arches_route_to_tmo_or_say_why_not(arch):
    for op, cap in caps.TABLE.items():
        route = caps.route(op, arch)
        if cap.uses_tmo:
            assert route.kernel.startswith("torch_mlu_ops: ")
            assert all(name in route.kernel for name in cap.vendor_ops), op
        else:
            assert route.kernel.startswith(caps.COMPOSITION)
            assert route.reason.startswith(f"{op}: not supported by tmo because ")


def test_an_unknown_arch_gets_the_tmo_routes_and_says_so():
    assert caps.route("grouped_gemm", caps.UNKNOWN).reason.startswith("device arch unknown, mtp_592 routes assumed; ")
    assert not caps.route("grouped_gemm", "mtp_592").reason.startswith("device arch unknown")


def test_routes_name_the_v4_specific_conditions():
    assert "input_ids, tid2eid" in caps.TABLE["moe_route"].route and "route_scale" in caps.TABLE["moe_route"].route
    assert "rope_at_front=False" in caps.TABLE["indexer_topk"].route
    assert "D = 4096 and HC = 4 only" in caps.TABLE["mhc_post"].limits
    assert "learnable_sink" in caps.TABLE["sparse_attn"].route and "flash_attention" in caps.TABLE["sparse_attn"].why
    assert "128" in caps.TABLE["sparse_attn"].limits and "256 with bf16 KV" in caps.TABLE["sparse_attn"].limits
    assert caps.TABLE["kv_compress"].vendor_ops == ("fused_compress_multi_kv", "fused_compress_single_kv")
    assert caps.TABLE["moe_ffn"].vendor_ops == ("moe_gen_idx", "moe_expand_input", "group_gemm", "moe_combine_result")
    assert not caps.TABLE["engram_hash"].uses_tmo and not caps.TABLE["engram_lookup"].uses_tmo


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


def test_cambricon_docs_route_table_matches_the_capability_table():
    """docs/cambricon.md's route table names every op with its tmo ops; ops with MLU kernels are in bold."""
    from pathlib import Path

    from v4_ascend.backends.mlu import kernels, tmo

    text = (Path(__file__).resolve().parents[2] / "docs" / "cambricon.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    documented = {op.strip(" `") for cell in rows for op in cell.split(",")}
    assert documented >= set(caps.TABLE) - {"moe_ffn"} and any(cell.startswith("`moe_ffn`") for cell in rows)
    for op, cap in caps.TABLE.items():
        line = next(line for cell, line in rows.items() if f"`{op}`" in cell)
        assert all(f"`{name}" in line for name in cap.vendor_ops), op
        has_kernel = op in library.ops() and kernels.TABLE.routes()[op].served
        assert ("**tmo**" in line) == has_kernel, op
    for name, versions in tmo.SUPPORTED.items():
        assert all(f"**{v}" in text for v in versions), name
