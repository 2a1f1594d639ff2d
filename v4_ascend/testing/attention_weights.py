"""Random attention-layer weights and a tiny V4-shaped config, for tests of the attention layers."""

from __future__ import annotations

import torch

from v4_ascend.layers.attention import AttentionWeights, CompressorWeights, IndexerWeights
from v4_ascend.model.config import ModelConfig


def tiny_config(**changes) -> ModelConfig:
    """V4 structure with tiny dimensions: window 8, CSA ratio 4, HCA ratio 16, top-3 indexer."""
    base = ModelConfig(
        vocab_size=64, dim=32, n_layers=3, n_heads=4, q_lora_rank=24, o_groups=2, o_lora_rank=16, index_topk=3,
        n_routed_experts=4, moe_inter_dim=16, route_scale=1.0, compress_ratios=(0, 4, 16, 0), head_dim=80,
        rope_head_dim=16, window_size=8, index_n_heads=2, index_head_dim=32,
    )
    return base.replace(**changes)


def _linear(out_features, in_features, dtype, gen):
    return (torch.randn(out_features, in_features, generator=gen, dtype=torch.float64) / in_features**0.5).to(dtype)


def _norm(n, dtype, gen):
    return (1 + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype)


def _compressor(config, ratio, width, dtype, gen):
    c = 2 if ModelConfig.is_csa(ratio) else 1
    return CompressorWeights(
        wkv=_linear(c * width, config.dim, dtype, gen),
        wgate=_linear(c * width, config.dim, dtype, gen),
        ape=torch.randn(ratio, c * width, generator=gen, dtype=torch.float64).to(torch.float32),
        norm=_norm(width, dtype, gen),
    )


def random_attention_weights(config: ModelConfig, ratio: int, dtype: torch.dtype, gen: torch.Generator):
    """Weights of one attention layer of compression ``ratio`` with unit-scale activations."""
    H, d, G = config.n_heads, config.head_dim, config.o_groups
    weights = AttentionWeights(
        wq_a=_linear(config.q_lora_rank, config.dim, dtype, gen),
        q_norm=_norm(config.q_lora_rank, dtype, gen),
        wq_b=_linear(H * d, config.q_lora_rank, dtype, gen),
        wkv=_linear(d, config.dim, dtype, gen),
        kv_norm=_norm(d, dtype, gen),
        wo_a=_linear(G * config.o_lora_rank, H * d // G, dtype, gen),
        wo_b=_linear(config.dim, G * config.o_lora_rank, dtype, gen),
        attn_sink=torch.randn(H, generator=gen, dtype=torch.float64).to(torch.float32),
    )
    if ratio:
        weights.compressor = _compressor(config, ratio, d, dtype, gen)
    if ModelConfig.is_csa(ratio):
        weights.indexer = IndexerWeights(
            wq_b=_linear(config.index_n_heads * config.index_head_dim, config.q_lora_rank, dtype, gen),
            weights_proj=_linear(config.index_n_heads, config.dim, dtype, gen),
            compressor=_compressor(config, ratio, config.index_head_dim, dtype, gen),
        )
    return weights
