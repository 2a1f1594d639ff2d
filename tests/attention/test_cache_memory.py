"""Cache byte accounting (exact, and at 1M tokens for Flash/Pro vs V3.2), model config, memory CLI."""

from __future__ import annotations

import argparse

import pytest
import torch

from v4_ascend.cli import memory
from v4_ascend.layers.cache import (
    AttentionCache,
    entry_bytes,
    index_key_bytes,
    layer_cache_bytes,
    mla_indexer_cache_bytes,
    model_cache_bytes,
)
from v4_ascend.model.config import FLASH, PRO, ModelConfig

M = 1 << 20
GIB = 1 << 30


def test_entry_layouts():
    assert entry_bytes(FLASH, "fp8") == 448 + 2 * 64 + 7 + 1 == 584
    assert entry_bytes(FLASH, "bf16") == 1024
    assert index_key_bytes(PRO, "fp8") == 64 + 4 == 68 and index_key_bytes(PRO, "bf16") == 256
    with pytest.raises(ValueError, match="'layout' must be one of"):
        entry_bytes(FLASH, "fp4")


@pytest.mark.parametrize("ratio", [0, 4, 128])
def test_nbytes_of_a_bf16_cache_is_its_storage(ratio):
    config = FLASH.replace(head_dim=128, rope_head_dim=64, index_head_dim=64)
    cache = AttentionCache(config, ratio, batch=3, max_len=1024, dtype=torch.bfloat16)
    storage = sum(t.nbytes for t in cache.tensors().values())
    assert cache.nbytes("bf16") == storage == 3 * cache.nbytes("bf16", per_sequence=True)
    assert cache.nbytes("fp8") < cache.nbytes("bf16")


def test_layer_bytes_by_hand():
    csa = layer_cache_bytes(FLASH, 4, M, "fp8")
    assert csa.window == 128 * 584 and csa.compressed == 262144 * 584 and csa.index_keys == 262144 * 68
    assert csa.states == 2 * (8 * 1024 + 8 * 256) * 4  # main + indexer kv/score states, fp32
    hca = layer_cache_bytes(PRO, 128, M, "fp8")
    assert (hca.compressed, hca.index_keys, hca.states) == (8192 * 584, 0, 2 * 128 * 512 * 4)
    assert layer_cache_bytes(FLASH, 0, M, "fp8").total == 128 * 584


def test_one_million_tokens_flash_pro_and_v32():
    flash, pro = model_cache_bytes(FLASH, M, "fp8"), model_cache_bytes(PRO, M, "fp8")
    # v4_math.md §3.7: 21 CSA (128 + 262144 entries + 262144 keys), 20 HCA (128 + 8192), 2 SWA (128)
    assert flash["total"].kv == 21 * ((128 + 262144) * 584 + 262144 * 68) + 20 * (128 + 8192) * 584 + 2 * 128 * 584
    assert pro["total"].kv == 30 * ((128 + 262144) * 584 + 262144 * 68) + 31 * (128 + 8192) * 584
    assert round(flash["total"].kv / GIB, 1) == 3.4 and round(pro["total"].kv / GIB, 1) == 4.9
    assert round((pro["total"].kv - pro["csa"].index_keys) / GIB, 1) == 4.4  # main KV only
    v32 = mla_indexer_cache_bytes(M)
    assert v32 == 788 * 61 * M
    assert 0.10 < pro["total"].total / v32 < 0.11  # the seed claim: Pro needs about 10 % of V3.2
    assert 0.07 < flash["total"].total / v32 < 0.075  # and Flash about 7 %
    bf16 = model_cache_bytes(FLASH, M, "bf16")["total"].kv
    assert 1.9 < bf16 / flash["total"].kv < 2.0  # "the bf16 reference layout is about 2x larger"


def test_presets_follow_the_spec_layer_assignment():
    assert len(FLASH.compress_ratios) == 44 and len(PRO.compress_ratios) == 62
    assert FLASH.compress_ratios[:2] == (0, 0) and PRO.compress_ratios[:2] == (128, 128)
    assert [FLASH.compress_ratios.count(r) for r in (0, 4, 128)] == [3, 21, 20]
    assert [PRO.compress_ratios.count(r) for r in (0, 4, 128)] == [1, 30, 31]
    assert all(r == 4 for r in FLASH.compress_ratios[2:43:2]) and FLASH.compress_ratios[-1] == 0
    assert (FLASH.n_heads // FLASH.o_groups) * FLASH.head_dim == (PRO.n_heads // PRO.o_groups) * PRO.head_dim == 4096


def test_from_hf_config_maps_the_keys():
    hf = {
        "vocab_size": 129280, "hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 128,
        "q_lora_rank": 1536, "o_groups": 16, "o_lora_rank": 1024, "index_topk": 1024, "n_routed_experts": 384,
        "moe_intermediate_size": 3072, "routed_scaling_factor": 2.5, "compress_ratios": list(PRO.compress_ratios),
        "num_experts_per_tok": 6, "num_hash_layers": 3, "scoring_func": "sqrtsoftplus", "sliding_window": 128,
        "qk_rope_head_dim": 64, "max_position_embeddings": 1048576, "rms_norm_eps": 1e-6,
        "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                         "beta_fast": 32, "beta_slow": 1},
        "num_nextn_predict_layers": 1, "architectures": ["DeepseekV4ForCausalLM"],
    }
    assert ModelConfig.from_hf_config(hf) == PRO
    with pytest.raises(ValueError, match="missing keys for \\['dim'\\]"):
        ModelConfig.from_hf_config({k: v for k, v in hf.items() if k != "hidden_size"})
    with pytest.raises(ValueError, match="'compress_ratios' must have"):
        PRO.replace(compress_ratios=PRO.compress_ratios[:-1])


def test_memory_cli_arithmetic_and_output(capsys):
    assert memory.parse_context("1M") == M and memory.parse_context("128k") == 131072
    assert memory.parse_context("65536") == 65536
    with pytest.raises(argparse.ArgumentTypeError, match="--context"):
        memory.parse_context("lots")
    report = memory.memory_report("pro", M)
    assert report.by_kind["total"] == model_cache_bytes(PRO, M, "fp8")["total"]
    assert report.v32_bytes == mla_indexer_cache_bytes(M) and 0.10 < report.fraction_of_v32 < 0.11
    parser = argparse.ArgumentParser()
    memory.register(parser.add_subparsers())
    args = parser.parse_args(["memory", "--model", "pro", "--context", "1M"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "V4-Pro" in printed and "10.5 %" in printed and f"{report.by_kind['total'].total:,}" in printed
