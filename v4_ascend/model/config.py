"""DeepSeek V4 model configuration: field names are the keys of the official inference ``config.json``.

``FLASH`` and ``PRO`` are the released V4-Flash / V4-Pro values (``shared/spec/v4_math.md`` §1).
:meth:`ModelConfig.from_hf_config` reads a Hugging Face ``config.json`` dict through the HF ↔ inference
key map. ``compress_ratios`` has one entry per layer including the MTP layer(s): 0 = sliding window
only, 4 = CSA (overlapping compression + lightning indexer), 128 = HCA (dense compressed attention).
Any other positive ratio is treated as an HCA-style layer (V4 uses only 0, 4 and 128; small ratios
keep tests fast).

The optional ``engram_*`` keys are V4.1-Flash's (``shared/spec/v4_math.md`` §5.2); V4 itself has no
Engram layer (``engram_layer_ids`` empty). :data:`TINY` keeps every structural feature of the model with
tiny dimensions so that short prompts exercise compression, hash routing and Engram.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# HF config.json key -> inference key; "a.b" is a nested HF key. Keys absent here have the same name.
HF_TO_INFERENCE = {
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "moe_intermediate_size": "moe_inter_dim",
    "num_experts_per_tok": "n_activated_experts",
    "num_hash_layers": "n_hash_layers",
    "routed_scaling_factor": "route_scale",
    "scoring_func": "score_func",
    "sliding_window": "window_size",
    "qk_rope_head_dim": "rope_head_dim",
    "rope_scaling.factor": "rope_factor",
    "rope_scaling.original_max_position_embeddings": "original_seq_len",
    "rope_scaling.beta_fast": "beta_fast",
    "rope_scaling.beta_slow": "beta_slow",
    "max_position_embeddings": "max_seq_len",
    "rms_norm_eps": "norm_eps",
    "num_nextn_predict_layers": "n_mtp_layers",
    "n_shared_experts": "n_shared_experts",
}

SWA, CSA_RATIO, HCA_RATIO = 0, 4, 128


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters of one DeepSeek V4 model (inference-format names)."""

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    q_lora_rank: int
    o_groups: int
    o_lora_rank: int
    index_topk: int
    n_routed_experts: int
    moe_inter_dim: int
    route_scale: float
    compress_ratios: tuple[int, ...]
    n_mtp_layers: int = 1
    head_dim: int = 512
    rope_head_dim: int = 64
    window_size: int = 128
    index_n_heads: int = 64
    index_head_dim: int = 128
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    rope_factor: float = 16.0
    original_seq_len: int = 65536
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    max_seq_len: int = 1 << 20
    norm_eps: float = 1e-6
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    n_shared_experts: int = 1
    n_activated_experts: int = 6
    score_func: str = "sqrtsoftplus"
    n_hash_layers: int = 3
    swiglu_limit: float = 10.0
    expert_dtype: str = "fp4"
    engram_layer_ids: tuple[int, ...] = ()
    engram_max_ngram_size: int = 4
    engram_n_heads: int = 8
    engram_head_dim: int = 256
    engram_vocab_size: int = 16_000_000
    engram_compressed_vocab_size: int = 99_092
    engram_pad_token_id: int = 2

    def __post_init__(self):
        object.__setattr__(self, "compress_ratios", tuple(int(r) for r in self.compress_ratios))
        object.__setattr__(self, "engram_layer_ids", tuple(int(i) for i in self.engram_layer_ids))
        if self.expert_dtype not in ("fp4", "fp8"):
            raise ValueError(f"ModelConfig: 'expert_dtype' must be 'fp4' or 'fp8', got {self.expert_dtype!r}")
        if any(not 0 <= i < self.n_layers for i in self.engram_layer_ids):
            raise ValueError(f"ModelConfig: 'engram_layer_ids' must be backbone layers, got {self.engram_layer_ids}")
        if len(self.compress_ratios) != self.n_layers + self.n_mtp_layers:
            raise ValueError(
                f"ModelConfig: 'compress_ratios' must have n_layers + n_mtp_layers = "
                f"{self.n_layers + self.n_mtp_layers} entries, got {len(self.compress_ratios)}"
            )
        if min(self.compress_ratios, default=0) < 0:
            raise ValueError(f"ModelConfig: 'compress_ratios' entries must be >= 0, got {self.compress_ratios}")
        if self.n_heads % self.o_groups:
            raise ValueError(f"ModelConfig: 'o_groups' must divide n_heads={self.n_heads}, got {self.o_groups}")
        if not 0 < self.rope_head_dim <= self.head_dim or self.rope_head_dim % 2:
            raise ValueError(f"ModelConfig: 'rope_head_dim' must be even and <= head_dim, got {self.rope_head_dim}")

    @property
    def nope_head_dim(self) -> int:
        return self.head_dim - self.rope_head_dim

    @staticmethod
    def is_csa(ratio: int) -> bool:
        """CSA layers (overlapping compressor + lightning indexer) are exactly those of ratio 4."""
        return ratio == CSA_RATIO

    def layer_ratio(self, layer: int) -> int:
        """Compression ratio of ``layer`` (0 = window only, 4 = CSA, 128 = HCA)."""
        return self.compress_ratios[layer]

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (e.g. tiny dimensions for tests)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> ModelConfig:
        """Build from a Hugging Face ``config.json`` dict; unknown keys are ignored."""
        flat = dict(hf)
        for key, value in (hf.get("rope_scaling") or {}).items():
            flat[f"rope_scaling.{key}"] = value
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in flat.items():
            name = HF_TO_INFERENCE.get(key, key)
            if name in fields:
                values[name] = value
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.default is dataclasses.MISSING and f.name not in values)
        if missing:
            raise ValueError(f"ModelConfig.from_hf_config: missing keys for {missing}")
        return cls(**values)

    def to_hf_config(self) -> dict[str, Any]:
        """The Hugging Face ``config.json`` dict of this config (inverse of :meth:`from_hf_config`)."""
        to_hf = {inference: hf for hf, inference in HF_TO_INFERENCE.items()}
        hf: dict[str, Any] = {"architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
                              "torch_dtype": "bfloat16", "rope_scaling": {"type": "yarn"},
                              "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                                                      "weight_block_size": [128, 128]}}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            value = list(value) if isinstance(value, tuple) else value
            key = to_hf.get(field.name, field.name)
            if key.startswith("rope_scaling."):
                hf["rope_scaling"][key.removeprefix("rope_scaling.")] = value
            else:
                hf[key] = value
        return hf


def _ratios(first: list[int], *, n_layers: int) -> tuple[int, ...]:
    """first layers, then alternating CSA (even) / HCA (odd) layers up to n_layers, then one SWA MTP layer."""
    body = [CSA_RATIO if layer % 2 == 0 else HCA_RATIO for layer in range(len(first), n_layers)]
    return tuple(first + body + [SWA])


FLASH = ModelConfig(
    vocab_size=129280, dim=4096, n_layers=43, n_heads=64, q_lora_rank=1024, o_groups=8, o_lora_rank=1024,
    index_topk=512, n_routed_experts=256, moe_inter_dim=2048, route_scale=1.5,
    compress_ratios=_ratios([SWA, SWA], n_layers=43),
)

PRO = ModelConfig(
    vocab_size=129280, dim=7168, n_layers=61, n_heads=128, q_lora_rank=1536, o_groups=16, o_lora_rank=1024,
    index_topk=1024, n_routed_experts=384, moe_inter_dim=3072, route_scale=2.5,
    compress_ratios=_ratios([HCA_RATIO, HCA_RATIO], n_layers=61),
)

PRESETS = {"flash": FLASH, "pro": PRO}

# Every structural feature at toy size: SWA, CSA (ratio 4) and HCA (ratio 8) layers, 2 hash-routed MoE
# layers then learned routing, a shared expert, 4 mHC streams, one Engram layer (tiny prime tables)
# and one SWA MTP layer. Dims are multiples of 32 so FP4 expert blocks tile; head dims leave a NoPE
# part of 64 (one FP8 block) and indexer heads a power of two (Hadamard).
TINY = ModelConfig(
    vocab_size=256, dim=64, n_layers=5, n_heads=4, q_lora_rank=32, o_groups=2, o_lora_rank=32, index_topk=4,
    n_routed_experts=8, moe_inter_dim=32, route_scale=1.5, compress_ratios=(0, 4, 8, 4, 8, 0), head_dim=80,
    rope_head_dim=16, window_size=8, index_n_heads=2, index_head_dim=32, n_activated_experts=2,
    n_hash_layers=2, max_seq_len=256, original_seq_len=64, rope_factor=4.0, engram_layer_ids=(1,),
    engram_max_ngram_size=3, engram_n_heads=2, engram_head_dim=32, engram_vocab_size=97,
    engram_compressed_vocab_size=256, engram_pad_token_id=0,
)
