"""Safetensors checkpoints of V4 in the official inference format: validated loading and a tiny writer.

Loading (:func:`load_checkpoint`):

1. ``config.json`` (Hugging Face format) gives the :class:`ModelConfig`, hence the expected tensors
   (:func:`v4_ascend.model.weights.stored_spec`);
2. every shard is opened with ``safetensors.safe_open`` (memory-mapped, nothing read yet) and the
   header of every tensor (name, shape, dtype) is checked against the expected set **before any tensor
   is read**: missing, unexpected, wrongly shaped or typed tensors raise :class:`CheckpointError`
   naming the key and its file; an unreadable header names the file;
3. tensors are then read one at a time from the mapped files (each is copied out of the map once, so peak
   memory is the loaded model plus one stored tensor); FP8 (128x128 UE8M0) and FP4 (1x32 UE8M0) linears
   are dequantised with :mod:`v4_ascend.ops` (``fp8_weight_dequant`` / ``fp4_dequant``) to the compute
   dtype. Engram tables stay quantised (FP8 rows + UE8M0 scales, which ``engram_lookup`` dequantises per
   gathered row). ``dequantize=False`` returns every tensor as stored.

Sharded checkpoints carry ``model.safetensors.index.json`` (``{"metadata": {"total_size": ...},
"weight_map": {key: file}}``); a single ``model.safetensors`` works too.

Writing (:func:`write_checkpoint`): deterministic random weights for a config, quantised exactly as the
official files are (FP8 e4m3 + ``F8_E8M0`` scales, FP4 packed in ``I8`` + ``F8_E8M0`` scales), split into
``shards`` files with an index, plus ``config.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from v4_ascend import ops
from v4_ascend.model.config import ModelConfig
from v4_ascend.model.weights import (
    ENGRAM_BLOCK,
    FP4_BLOCK,
    FP8_BLOCK,
    ParamSpec,
    StoredTensor,
    checkpoint_spec,
    stored_spec,
)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that does not match its config; the message names the key (or file) at fault."""


def read_config(directory: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of a checkpoint directory's Hugging Face ``config.json``."""
    path = Path(directory) / CONFIG_FILE
    try:
        return ModelConfig.from_hf_config(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error


def weight_map(directory: str | Path) -> dict[str, str]:
    """Key -> shard file name, from the index file (or every key of a single ``model.safetensors``)."""
    directory = Path(directory)
    index = directory / INDEX_FILE
    if index.exists():
        try:
            mapping = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index}: not a safetensors index with a 'weight_map': {error}") from error
        for key, file in mapping.items():
            if not (directory / file).is_file():
                raise CheckpointError(f"{index}: key {key!r} maps to missing shard {file!r}")
        return dict(mapping)
    single = directory / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"{directory}: neither {INDEX_FILE} nor {SINGLE_FILE} exists")
    with _open(single) as handle:
        return {key: SINGLE_FILE for key in handle.keys()}


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: unreadable safetensors header: {error}") from error


def read_headers(directory: str | Path) -> dict[str, tuple[str, StoredTensor]]:
    """``key -> (file, header entry)`` of every tensor in every shard; reads headers only."""
    directory = Path(directory)
    mapping = weight_map(directory)
    headers: dict[str, tuple[str, StoredTensor]] = {}
    for file in sorted(set(mapping.values())):
        with _open(directory / file) as handle:
            for key in handle.keys():
                if key in headers:
                    raise CheckpointError(f"key {key!r} is stored twice: in {headers[key][0]} and {file}")
                if mapping.get(key) != file:
                    raise CheckpointError(f"key {key!r} is in {file} but the index maps it to {mapping.get(key)!r}")
                info = handle.get_slice(key)
                headers[key] = (file, StoredTensor(tuple(info.get_shape()), info.get_dtype()))
    for key, file in mapping.items():
        if key not in headers:
            raise CheckpointError(f"key {key!r}: the index maps it to {file}, which does not contain it")
    return headers


def validate(config: ModelConfig, headers: dict[str, tuple[str, StoredTensor]]) -> None:
    """Check the headers against the tensors ``config`` needs; the first problem raises, naming the key."""
    expected = stored_spec(config)
    missing = [key for key in expected if key not in headers]
    if missing:
        raise CheckpointError(f"missing key {missing[0]!r} ({len(missing)} missing in all)")
    unexpected = [key for key in headers if key not in expected]
    if unexpected:
        key = unexpected[0]
        raise CheckpointError(f"unexpected key {key!r} in {headers[key][0]} ({len(unexpected)} unexpected in all)")
    for key, want in expected.items():
        file, got = headers[key]
        if got.shape != want.shape:
            raise CheckpointError(f"key {key!r} in {file}: shape {list(got.shape)}, expected {list(want.shape)}")
        if got.dtype != want.dtype:
            raise CheckpointError(f"key {key!r} in {file}: dtype {got.dtype}, expected {want.dtype}")


def load_checkpoint(
    directory: str | Path, config: ModelConfig | None = None, dtype: torch.dtype = torch.bfloat16,
    dequantize: bool = True,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Validate then load a checkpoint directory.

    Args:
        directory: holds ``config.json`` and the shards (with an index, or one ``model.safetensors``).
        config: overrides ``config.json`` when given.
        dtype: dtype of dequantised linears and of bf16 tensors (fp32 tensors stay fp32; int tables stay int).
        dequantize: False returns the stored tensors (quantised weights and their ``.scale``) unchanged.

    Returns:
        ``(config, tensors)``: by parameter name (:func:`~v4_ascend.model.weights.checkpoint_spec`), each
        quantised linear's ``.weight`` dequantised and its ``.scale`` consumed, except Engram tables, kept
        as FP8 ``.weight`` + ``.scale``.

    Raises:
        CheckpointError: naming the key or file, for any header, shape, dtype or key-set mismatch.
    """
    directory = Path(directory)
    config = config or read_config(directory)
    headers = read_headers(directory)
    validate(config, headers)
    handles = {file: _open(directory / file) for file in {file for file, _ in headers.values()}}

    def read(key: str) -> torch.Tensor:
        return handles[headers[key][0]].get_tensor(key)

    if not dequantize:
        return config, {key: read(key) for key in headers}
    tensors: dict[str, torch.Tensor] = {}
    for name, spec in checkpoint_spec(config).items():
        if spec.quant is None:
            tensor = read(name)
            tensors[name] = tensor.to(dtype) if tensor.dtype == torch.bfloat16 else tensor
            continue
        scale_key = name.removesuffix(".weight") + ".scale"
        if spec.quant == "fp8_rows":
            tensors[name], tensors[scale_key] = read(name), read(scale_key)
        else:
            tensors[name] = dequantize_weight(read(name), read(scale_key), spec.quant, dtype)
    return config, tensors


def dequantize_weight(weight: torch.Tensor, scale: torch.Tensor, quant: str, dtype: torch.dtype) -> torch.Tensor:
    """A stored FP8 (128x128 blocks) or FP4 (packed ``I8``, 1x32 blocks) linear weight, dequantised to ``dtype``."""
    if quant == "fp8":
        return ops.fp8_weight_dequant(weight, scale, FP8_BLOCK, dtype)
    if quant == "fp4":
        return ops.fp4_dequant(weight.view(torch.uint8), scale, dtype)
    raise ValueError(f"dequantize_weight: 'quant' must be 'fp8' or 'fp4', got {quant!r}")


def quantize_weight(weight: torch.Tensor, quant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored ``(weight, scale)`` of a float weight: UE8M0 scales as ``float8_e8m0fnu``."""
    if quant == "fp8":
        q, scale = ops.fp8_weight_quant(weight, FP8_BLOCK)
    elif quant == "fp4":
        q, scale = ops.fp4_quant(weight, FP4_BLOCK)
        q = q.view(torch.int8)
    elif quant == "fp8_rows":
        q, scale = ops.fp8_quant(weight, ENGRAM_BLOCK)
    else:
        raise ValueError(f"quantize_weight: 'quant' must be 'fp8', 'fp4' or 'fp8_rows', got {quant!r}")
    return q, ops.scale_to_ue8m0(scale).view(torch.float8_e8m0fnu)


def _random_parameter(name: str, spec: ParamSpec, config: ModelConfig, gen: torch.Generator) -> torch.Tensor:
    """Random values with unit-scale activations: linears ~ N(0, 1/fan_in), norms ~ 1, mHC small."""
    shape = spec.shape
    if name.endswith("tid2eid"):
        # distinct experts per token: the first k of a random permutation
        keys = torch.rand(shape[0], config.n_routed_experts, generator=gen)
        return keys.argsort(dim=1)[:, : shape[1]].to(torch.int64).contiguous()
    if name.endswith("norm.weight") and len(shape) == 1:
        values = 1 + 0.1 * torch.randn(shape, generator=gen)
    elif name.endswith("engram.norm.weight"):
        values = 1 + 0.1 * torch.randn(shape, generator=gen)
    elif "hc_" in name and name.endswith("_fn"):
        values = 0.02 * torch.randn(shape, generator=gen)
    elif "hc_" in name and name.endswith("_scale"):
        values = 0.5 + 0.1 * torch.rand(shape, generator=gen)
    elif "hc_" in name and name.endswith("_base"):
        values = 0.1 * torch.randn(shape, generator=gen)
    elif name.endswith("embed.weight") and "engram" not in name:
        values = torch.randn(shape, generator=gen)
    elif len(shape) == 2 and not name.endswith("ape"):
        values = torch.randn(shape, generator=gen) / math.sqrt(shape[1])
    else:  # attn_sink, ape, gate bias, Engram rows
        values = torch.randn(shape, generator=gen)
    return values


def random_parameters(config: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic fp32 (int64 for ``tid2eid``) values of every parameter of ``config``, by name."""
    gen = torch.Generator().manual_seed(seed)
    return {name: _random_parameter(name, spec, config, gen) for name, spec in checkpoint_spec(config).items()}


def encode_parameters(config: ModelConfig, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file tensors of parameter values: quantised linears + scales, the rest in their storage dtype."""
    stored: dict[str, torch.Tensor] = {}
    for name, spec in checkpoint_spec(config).items():
        value = values[name]
        if spec.quant is None:
            stored[name] = value.to(spec.dtype).contiguous()
        else:
            q, scale = quantize_weight(value.to(torch.float32), spec.quant)
            stored[name], stored[name.removesuffix(".weight") + ".scale"] = q.contiguous(), scale.contiguous()
    return stored


def write_checkpoint(directory: str | Path, config: ModelConfig, seed: int = 0, shards: int = 2) -> Path:
    """Write a deterministic random-weight checkpoint of ``config`` in the official format.

    ``shards`` files ``model-0000i-of-0000n.safetensors`` (tensors in spec order, split into runs of
    about equal bytes), ``model.safetensors.index.json`` and the Hugging Face ``config.json``. The same
    ``(config, seed)`` always gives byte-identical files.
    """
    if shards < 1:
        raise ValueError(f"write_checkpoint: 'shards' must be >= 1, got {shards}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stored = encode_parameters(config, random_parameters(config, seed))
    sizes = {key: t.numel() * t.element_size() for key, t in stored.items()}
    total = sum(sizes.values())
    files = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    mapping, done = {}, 0
    for key in stored:
        mapping[key] = files[min(shards - 1, done * shards // total)]
        done += sizes[key]
    for file in files:
        part = {key: stored[key] for key in stored if mapping[key] == file}
        save_file(part, str(directory / file), metadata={"format": "pt"})
    (directory / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": mapping},
                                                   indent=2))
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_hf_config(), indent=2))
    return directory


__all__ = [
    "CheckpointError", "dequantize_weight", "encode_parameters", "load_checkpoint",
    "quantize_weight", "random_parameters", "read_config", "read_headers", "validate", "weight_map",
    "write_checkpoint",
]
