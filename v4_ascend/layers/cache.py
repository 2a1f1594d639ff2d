"""Per-layer attention cache of V4 (``shared/spec/v4_math.md`` §3.7) and its exact byte accounting.

One :class:`AttentionCache` holds, for a batch of sequences of one layer:

- ``window [B, W, d]``: ring buffer of the last ``W`` raw KV entries (slot = position mod W);
- ``compressed [B, max_len // ratio, d]``: compressed entries, slot ``i`` = entry ``i`` (CSA/HCA);
- ``index_keys [B, max_len // 4, d_I]``: the lightning indexer's keys (CSA only);
- compressor states (fp32; fp64 for an fp64 cache): ``kv_state``/``score_state`` of the main
  compressor and ``index_kv_state``/``index_score_state`` of the indexer's (CSA only);
- ``lengths [B]``: tokens cached per sequence (the next token's position).

Byte accounting covers two layouts per entry: ``"bf16"`` (the reference simulation, 2 bytes per
channel) and ``"fp8"`` (production FlashMLA MODEL1 / vLLM ``fp8_ds_mla``: NoPE as e4m3 + RoPE as bf16 +
one UE8M0 byte per 64 NoPE channels, the scale group padded to 8 bytes: 584 B for V4; FP4 indexer keys:
two channels per byte + one UE8M0 byte per 32: 68 B). Compressor states are fp32 in both.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from v4_ascend.model.config import ModelConfig

LAYOUTS = ("bf16", "fp8")


def entry_bytes(config: ModelConfig, layout: str) -> int:
    """Bytes of one raw or compressed KV entry (bf16: 1024; fp8: 448 + 128 + 8 = 584 for V4)."""
    if layout == "bf16":
        return 2 * config.head_dim
    if layout == "fp8":
        scales = -(-config.nope_head_dim // 64)
        return config.nope_head_dim + 2 * config.rope_head_dim + -(-scales // 8) * 8
    raise ValueError(f"entry_bytes: 'layout' must be one of {LAYOUTS}, got {layout!r}")


def index_key_bytes(config: ModelConfig, layout: str) -> int:
    """Bytes of one indexer key (bf16: 256; fp8 layout keeps MXFP4 keys: 64 + 4 = 68 for V4)."""
    if layout == "bf16":
        return 2 * config.index_head_dim
    if layout == "fp8":
        return config.index_head_dim // 2 + -(-config.index_head_dim // 32)
    raise ValueError(f"index_key_bytes: 'layout' must be one of {LAYOUTS}, got {layout!r}")


def compressor_state_shape(ratio: int, width: int) -> tuple[int, int]:
    """``(rows, columns)`` of one compressor state for entry width ``width`` (overlap doubles both)."""
    c = 2 if ModelConfig.is_csa(ratio) else 1
    return c * ratio, c * width


@dataclass(frozen=True)
class CacheBytes:
    """Bytes of one layer's cache for one sequence (or a sum of them), by component."""

    window: int = 0
    compressed: int = 0
    index_keys: int = 0
    states: int = 0

    @property
    def kv(self) -> int:
        """KV entries and indexer keys (what grows with the context), without compressor states."""
        return self.window + self.compressed + self.index_keys

    @property
    def total(self) -> int:
        return self.kv + self.states

    def __add__(self, other: CacheBytes) -> CacheBytes:
        return CacheBytes(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __mul__(self, n: int) -> CacheBytes:
        return CacheBytes(*(getattr(self, f.name) * n for f in fields(self)))


def layer_cache_bytes(config: ModelConfig, ratio: int, max_len: int, layout: str, state_bytes: int = 4) -> CacheBytes:
    """Exact bytes per sequence of a layer of compression ``ratio`` sized for ``max_len`` tokens."""
    per_entry = entry_bytes(config, layout)
    window = config.window_size * per_entry
    if ratio == 0:
        return CacheBytes(window=window)
    states = 2 * _numel(compressor_state_shape(ratio, config.head_dim)) * state_bytes
    index_keys = 0
    if ModelConfig.is_csa(ratio):
        index_keys = (max_len // ratio) * index_key_bytes(config, layout)
        states += 2 * _numel(compressor_state_shape(ratio, config.index_head_dim)) * state_bytes
    return CacheBytes(window, (max_len // ratio) * per_entry, index_keys, states)


def model_cache_bytes(config: ModelConfig, max_len: int, layout: str) -> dict[str, CacheBytes]:
    """Per-sequence bytes of the backbone layers (MTP excluded) by layer kind, plus ``"total"``."""
    kinds: dict[str, CacheBytes] = {}
    for ratio in config.compress_ratios[: config.n_layers]:
        kind = "swa" if ratio == 0 else "csa" if ModelConfig.is_csa(ratio) else "hca"
        kinds[kind] = kinds.get(kind, CacheBytes()) + layer_cache_bytes(config, ratio, max_len, layout)
    kinds["total"] = sum(kinds.values(), CacheBytes())
    return kinds


def mla_indexer_cache_bytes(tokens: int, layers: int = 61, bytes_per_token: int = 656 + 132) -> int:
    """V3.2-style cache (MLA latent 656 B + indexer key 132 B per token per layer) for comparison."""
    return tokens * layers * bytes_per_token


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class AttentionCache:
    """The KV cache and compressor states of one attention layer for a batch of ``batch`` sequences."""

    def __init__(
        self, config: ModelConfig, ratio: int, batch: int, max_len: int,
        dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
    ):
        self.config, self.ratio, self.max_len = config, ratio, max_len
        self.state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        d = config.head_dim
        self.window = torch.zeros(batch, config.window_size, d, dtype=dtype, device=device)
        self.lengths = torch.zeros(batch, dtype=torch.int64)
        self.compressed = self.index_keys = None
        self.kv_state = self.score_state = self.index_kv_state = self.index_score_state = None
        if ratio:
            self.compressed = torch.zeros(batch, max_len // ratio, d, dtype=dtype, device=device)
            self.kv_state, self.score_state = self._states(batch, compressor_state_shape(ratio, d), device)
        if ModelConfig.is_csa(ratio):
            self.index_keys = torch.zeros(batch, max_len // ratio, config.index_head_dim, dtype=dtype, device=device)
            shape = compressor_state_shape(ratio, config.index_head_dim)
            self.index_kv_state, self.index_score_state = self._states(batch, shape, device)

    def _states(self, batch, shape, device):
        kv = torch.zeros(batch, *shape, dtype=self.state_dtype, device=device)
        return kv, torch.full_like(kv, float("-inf"))

    @property
    def batch(self) -> int:
        return self.window.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The cache's storage tensors by name (``lengths`` bookkeeping excluded)."""
        names = ("window", "compressed", "index_keys", "kv_state", "score_state", "index_kv_state",
                 "index_score_state")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def reset(self, sequence: int | None = None) -> None:
        """Forget one sequence (or all): empty window/entries, ``score_state = -inf``, length 0."""
        rows = slice(None) if sequence is None else slice(sequence, sequence + 1)
        for name, tensor in self.tensors().items():
            tensor[rows] = float("-inf") if name.endswith("score_state") else 0.0
        self.lengths[rows] = 0

    def bytes_per_sequence(self, layout: str = "bf16") -> CacheBytes:
        """Exact bytes one sequence of this layer takes in ``layout`` (``"bf16"`` or ``"fp8"``)."""
        return layer_cache_bytes(self.config, self.ratio, self.max_len, layout,
                                 torch.finfo(self.state_dtype).bits // 8)

    def nbytes(self, layout: str = "bf16", per_sequence: bool = False) -> int:
        """Exact bytes of this layer's cache (all sequences, or one with ``per_sequence``) in ``layout``."""
        one = self.bytes_per_sequence(layout).total
        return one if per_sequence else one * self.batch
