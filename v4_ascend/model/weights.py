"""The tensors of a V4 checkpoint in the official inference format (``shared/spec/v4_math.md`` §3.2, §4.2, §6.4).

Names are those of DeepSeek's inference ``model.py`` state dict, as shipped in the released
safetensors shards: ``embed.weight``, ``layers.{i}.attn.wq_a.weight``, ``layers.{i}.ffn.experts.{e}.w1.weight``,
``layers.{i}.hc_attn_fn``, ``mtp.{j}.e_proj.weight``, ``head.weight`` ... A quantised linear stores its
weight under ``<name>.weight`` and its UE8M0 scales under ``<name>.scale``:

- ``fp8``: ``float8_e4m3fn [N, K]`` + ``float8_e8m0fnu [ceil(N/128), ceil(K/128)]`` (attention, shared
  experts, MTP projections; routed experts of ``expert_dtype = "fp8"`` checkpoints);
- ``fp4``: ``int8 [N, K/2]`` (two e2m1 codes per byte, element ``2i`` in the low nibble) + ``float8_e8m0fnu
  [N, K/32]`` (routed experts);
- ``fp8_rows``: an Engram table, ``float8_e4m3fn [rows, E]`` + ``float8_e8m0fnu [rows, E/32]``. The
  Engram keys (``layers.{i}.engram.{embed,wkv,norm}``) are this project's naming of V4.1's Engram
  module (§5); V4 checkpoints have none.

:func:`checkpoint_spec` lists every parameter a config needs, with its logical (dequantised) shape;
:func:`stored_tensors` expands one parameter into the file tensors it occupies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from v4_ascend.model.config import ModelConfig

FP8_BLOCK = 128
FP4_BLOCK = 32
ENGRAM_BLOCK = 32
QUANT_KINDS = ("fp8", "fp4", "fp8_rows")

# safetensors header dtype names of the torch dtypes a V4 checkpoint uses.
SAFETENSORS_DTYPES = {
    torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.int32: "I32",
    torch.int8: "I8", torch.uint8: "U8", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e8m0fnu: "F8_E8M0",
}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: logical shape, storage dtype of an unquantised tensor, quantisation kind (or None)."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.bfloat16
    quant: str | None = None


@dataclass(frozen=True)
class StoredTensor:
    """A tensor as it appears in a safetensors header."""

    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name, e.g. "F8_E4M3"


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def stored_tensors(name: str, spec: ParamSpec) -> dict[str, StoredTensor]:
    """File tensors of parameter ``name`` (``<x>.weight`` -> ``<x>.weight`` and, when quantised, ``<x>.scale``)."""
    if spec.quant is None:
        return {name: StoredTensor(spec.shape, SAFETENSORS_DTYPES[spec.dtype])}
    scale_name = name.removesuffix(".weight") + ".scale"
    n, k = spec.shape
    if spec.quant == "fp8":
        weight, scale = StoredTensor((n, k), "F8_E4M3"), (_ceil(n, FP8_BLOCK), _ceil(k, FP8_BLOCK))
    elif spec.quant == "fp4":
        weight, scale = StoredTensor((n, k // 2), "I8"), (n, k // FP4_BLOCK)
    else:
        weight, scale = StoredTensor((n, k), "F8_E4M3"), (n, k // ENGRAM_BLOCK)
    return {name: weight, scale_name: StoredTensor(scale, "F8_E8M0")}


def is_hash_layer(config: ModelConfig, layer: int) -> bool:
    """Backbone layers ``< n_hash_layers`` route by token id (``tid2eid``); never the MTP layers."""
    return layer < min(config.n_hash_layers, config.n_layers)


def _attention(config: ModelConfig, ratio: int) -> dict[str, ParamSpec]:
    D, H, d, G = config.dim, config.n_heads, config.head_dim, config.o_groups
    Rq, Ro = config.q_lora_rank, config.o_lora_rank
    specs = {
        "attn.wq_a.weight": ParamSpec((Rq, D), quant="fp8"),
        "attn.q_norm.weight": ParamSpec((Rq,)),
        "attn.wq_b.weight": ParamSpec((H * d, Rq), quant="fp8"),
        "attn.wkv.weight": ParamSpec((d, D), quant="fp8"),
        "attn.kv_norm.weight": ParamSpec((d,)),
        "attn.wo_a.weight": ParamSpec((G * Ro, H * d // G), quant="fp8"),
        "attn.wo_b.weight": ParamSpec((D, G * Ro), quant="fp8"),
        "attn.attn_sink": ParamSpec((H,), torch.float32),
    }

    def compressor(prefix: str, width: int) -> dict[str, ParamSpec]:
        c = 2 if ModelConfig.is_csa(ratio) else 1
        return {
            f"{prefix}.wkv.weight": ParamSpec((c * width, D)),
            f"{prefix}.wgate.weight": ParamSpec((c * width, D)),
            f"{prefix}.ape": ParamSpec((ratio, c * width), torch.float32),
            f"{prefix}.norm.weight": ParamSpec((width,)),
        }

    if ratio:
        specs |= compressor("attn.compressor", d)
    if ModelConfig.is_csa(ratio):
        specs["attn.indexer.wq_b.weight"] = ParamSpec((config.index_n_heads * config.index_head_dim, Rq), quant="fp8")
        specs["attn.indexer.weights_proj.weight"] = ParamSpec((config.index_n_heads, D))
        specs |= compressor("attn.indexer.compressor", config.index_head_dim)
    return specs


def _mhc(site: str, config: ModelConfig, rows: int, scales: int) -> dict[str, ParamSpec]:
    n = config.hc_mult
    return {
        f"hc_{site}_fn": ParamSpec((rows, n * config.dim), torch.float32),
        f"hc_{site}_base": ParamSpec((rows,), torch.float32),
        f"hc_{site}_scale": ParamSpec((scales,), torch.float32),
    }


def _moe(config: ModelConfig, hash_routed: bool) -> dict[str, ParamSpec]:
    D, inter, E = config.dim, config.moe_inter_dim, config.n_routed_experts
    specs = {"ffn.gate.weight": ParamSpec((E, D))}
    if hash_routed:
        specs["ffn.gate.tid2eid"] = ParamSpec((config.vocab_size, config.n_activated_experts), torch.int64)
    else:
        specs["ffn.gate.bias"] = ParamSpec((E,), torch.float32)
    for e in range(E):
        for w, shape in (("w1", (inter, D)), ("w3", (inter, D)), ("w2", (D, inter))):
            specs[f"ffn.experts.{e}.{w}.weight"] = ParamSpec(shape, quant=config.expert_dtype)
    Is = inter * config.n_shared_experts
    if Is:
        for w, shape in (("w1", (Is, D)), ("w3", (Is, D)), ("w2", (D, Is))):
            specs[f"ffn.shared_experts.{w}.weight"] = ParamSpec(shape, quant="fp8")
    return specs


def engram_table_rows(config: ModelConfig) -> dict[int, int]:
    """Rows of each Engram layer's table (the prime layout of §5.3 (d)), by layer id."""
    if not config.engram_layer_ids:
        return {}
    from v4_ascend.ops import engram_layout

    layouts = engram_layout(config.engram_layer_ids, config.engram_max_ngram_size, config.engram_n_heads,
                            config.engram_vocab_size, config.engram_compressed_vocab_size)
    return {layout.layer_id: layout.num_rows for layout in layouts}


def _engram(config: ModelConfig, rows: int) -> dict[str, ParamSpec]:
    n, D, E = config.hc_mult, config.dim, config.engram_head_dim
    columns = (config.engram_max_ngram_size - 1) * config.engram_n_heads
    return {
        "engram.embed.weight": ParamSpec((rows, E), quant="fp8_rows"),
        "engram.wkv.weight": ParamSpec(((n + 1) * D, columns * E), quant="fp8"),
        "engram.norm.weight": ParamSpec((n, D), torch.float32),
    }


def block_spec(config: ModelConfig, layer: int, engram_rows: int | None = None) -> dict[str, ParamSpec]:
    """Parameters of block ``layer`` (backbone ``0..n_layers-1``, then MTP blocks), names relative to it."""
    n = config.hc_mult
    specs = {"attn_norm.weight": ParamSpec((config.dim,)), "ffn_norm.weight": ParamSpec((config.dim,))}
    specs |= _attention(config, config.layer_ratio(layer))
    specs |= _mhc("attn", config, (2 + n) * n, 3) | _mhc("ffn", config, (2 + n) * n, 3)
    specs |= _moe(config, is_hash_layer(config, layer))
    if engram_rows is not None:
        specs |= _engram(config, engram_rows)
    return specs


def checkpoint_spec(config: ModelConfig) -> dict[str, ParamSpec]:
    """Every parameter of a checkpoint of ``config``, by its checkpoint name (``.weight`` for linears)."""
    D, V = config.dim, config.vocab_size
    rows = engram_table_rows(config)
    specs = {"embed.weight": ParamSpec((V, D))}
    for layer in range(config.n_layers):
        for name, spec in block_spec(config, layer, rows.get(layer)).items():
            specs[f"layers.{layer}.{name}"] = spec
    specs["norm.weight"] = ParamSpec((D,))
    specs["head.weight"] = ParamSpec((V, D))
    specs |= _mhc("head", config, config.hc_mult, 1)
    for j in range(config.n_mtp_layers):
        mtp = {"e_proj.weight": ParamSpec((D, D), quant="fp8"), "h_proj.weight": ParamSpec((D, D), quant="fp8"),
               "enorm.weight": ParamSpec((D,)), "hnorm.weight": ParamSpec((D,)), "norm.weight": ParamSpec((D,))}
        mtp |= block_spec(config, config.n_layers + j) | _mhc("head", config, config.hc_mult, 1)
        for name, spec in mtp.items():
            specs[f"mtp.{j}.{name}"] = spec
    return specs


def stored_spec(config: ModelConfig) -> dict[str, StoredTensor]:
    """Every file tensor (weights and scales) of a checkpoint of ``config``, by key."""
    stored: dict[str, StoredTensor] = {}
    for name, spec in checkpoint_spec(config).items():
        stored |= stored_tensors(name, spec)
    return stored
