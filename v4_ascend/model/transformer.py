"""The DeepSeek V4 transformer (``shared/spec/v4_math.md`` §8), built only from :mod:`v4_ascend.ops` and
the helpers of :mod:`v4_ascend.layers`.

Per block ``l``: (V4.1 option: Engram injection into the streams), ``mhc_pre`` -> ``attn_norm`` ->
window / CSA / HCA attention (by ``compress_ratios[l]``) -> ``mhc_post``, then ``mhc_pre`` -> ``ffn_norm`` ->
MoE (hash-routed for ``l < n_hash_layers``, shared expert added) -> ``mhc_post``. The head collapses the 4
streams with ``mhc_head``, applies the final norm and the LM head in fp32.

Tokens are token-flattened as in :mod:`v4_ascend.layers.attention`: ``tokens [S_total]`` holds
``seq_lens[b]`` new tokens of each sequence ``b`` of a :class:`ModelCache`, which continues at
``cache.lengths[b]``; the same :meth:`Transformer.forward` serves chunked prefill and decode.
The MTP block(s) (§8) are available as a draft head: :meth:`Transformer.mtp_logits` maps the backbone
streams of position ``t`` (:meth:`Transformer.hidden`) and the token at ``t + 1`` to logits for ``t + 2``,
with its own SWA cache in the :class:`ModelCache`. Plain generation does not use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from v4_ascend import ops
from v4_ascend.layers.attention import (
    AttentionWeights,
    CompressorWeights,
    IndexerWeights,
    csa_attention,
    hca_attention,
    window_attention,
)
from v4_ascend.layers.cache import AttentionCache
from v4_ascend.layers.norm import rms_norm
from v4_ascend.model.checkpoint import load_checkpoint
from v4_ascend.model.config import ModelConfig
from v4_ascend.model.weights import is_hash_layer


@dataclass
class MhcWeights:
    """One mHC site: ``fn [(2+n)n, nD]`` (``[n, nD]`` for the head), ``base``, ``scale`` (fp32)."""

    fn: torch.Tensor
    base: torch.Tensor
    scale: torch.Tensor


@dataclass
class MoEWeights:
    """Router (``gate [E, D]``, ``bias [E]`` or ``tid2eid [V, k]``), stacked experts, shared expert."""

    gate: torch.Tensor
    w1: torch.Tensor  # [E, I, D]
    w3: torch.Tensor  # [E, I, D]
    w2: torch.Tensor  # [E, D, I]
    bias: torch.Tensor | None
    tid2eid: torch.Tensor | None
    shared: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # (w1, w3, w2)


@dataclass
class EngramWeights:
    """V4.1 Engram layer: hash layout, FP8 table + UE8M0 scales, ``wkv [(n+1)D, cols*E]``, fused norm ``[n, D]``."""

    layout: ops.EngramLayerLayout
    table: torch.Tensor
    table_scale: torch.Tensor
    wkv: torch.Tensor
    norm: torch.Tensor


@dataclass
class MtpWeights:
    """One MTP block: ``e_proj``/``h_proj [D, D]``, their input norms, the block, its head mix and norm."""

    e_proj: torch.Tensor
    h_proj: torch.Tensor
    enorm: torch.Tensor
    hnorm: torch.Tensor
    norm: torch.Tensor
    hc_head: MhcWeights
    block: BlockWeights


@dataclass
class BlockWeights:
    attn_norm: torch.Tensor
    ffn_norm: torch.Tensor
    attn: AttentionWeights
    hc_attn: MhcWeights
    hc_ffn: MhcWeights
    moe: MoEWeights
    engram: EngramWeights | None = None


class ModelCache:
    """KV caches of every backbone layer for a batch of sequences, plus the Engram n-gram history.

    Sequences are independent: each has its own length (``lengths``) and can be reset alone.
    """

    def __init__(self, config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype, device):
        self.config = config
        self.layers = [AttentionCache(config, config.layer_ratio(layer), batch, max_len, dtype, device)
                       for layer in range(config.n_layers)]
        self.mtp_layers = [AttentionCache(config, config.layer_ratio(config.n_layers + j), batch, max_len, dtype,
                                          device) for j in range(config.n_mtp_layers)]
        # last N-1 compressed token ids of each sequence (oldest first), for the Engram hash
        self.engram_history = torch.full((batch, max(config.engram_max_ngram_size - 1, 0)),
                                         config.engram_pad_token_id, dtype=torch.int64, device=device)

    @property
    def batch(self) -> int:
        return self.layers[0].batch

    @property
    def lengths(self) -> torch.Tensor:
        """``[B]`` tokens cached per sequence."""
        return self.layers[0].lengths

    @property
    def max_len(self) -> int:
        return self.layers[0].max_len

    def reset(self, sequence: int | None = None) -> None:
        """Forget one sequence (or all)."""
        for layer in self.layers + self.mtp_layers:
            layer.reset(sequence)
        rows = slice(None) if sequence is None else slice(sequence, sequence + 1)
        self.engram_history[rows] = self.config.engram_pad_token_id


ATTENTION = {"window": window_attention, "csa": csa_attention, "hca": hca_attention}


def _attention_kind(ratio: int) -> str:
    return "window" if ratio == 0 else "csa" if ModelConfig.is_csa(ratio) else "hca"


class Transformer:
    """A V4 model ready for inference; weights from :func:`v4_ascend.model.checkpoint.load_checkpoint`."""

    def __init__(self, config: ModelConfig, tensors: dict[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16,
                 device: torch.device | str = "cpu", token_map: torch.Tensor | None = None):
        self.config, self.dtype, self.device = config, dtype, torch.device(device)
        t = {name: tensor.to(self.device) for name, tensor in tensors.items()}
        self.embed = t["embed.weight"].to(dtype)
        self.head = t["head.weight"]
        self.norm = t["norm.weight"].to(dtype)
        self.hc_head = MhcWeights(t["hc_head_fn"], t["hc_head_base"], t["hc_head_scale"])
        layouts = {}
        if config.engram_layer_ids:
            layouts = {layout.layer_id: layout for layout in ops.engram_layout(
                config.engram_layer_ids, config.engram_max_ngram_size, config.engram_n_heads,
                config.engram_vocab_size, config.engram_compressed_vocab_size)}
            if token_map is None and config.engram_compressed_vocab_size != config.vocab_size:
                raise ValueError("Transformer: an Engram model needs 'token_map' (raw -> compressed ids) unless "
                                 "engram_compressed_vocab_size == vocab_size")
        self.token_map = None if token_map is None else token_map.to(self.device, torch.int64)
        self.blocks = [self._block(t, f"layers.{layer}.", layer, layouts.get(layer))
                       for layer in range(config.n_layers)]
        self.mtp = [self._mtp(t, j) for j in range(config.n_mtp_layers)]

    @classmethod
    def from_checkpoint(cls, directory: str | Path, dtype: torch.dtype = torch.bfloat16,
                        device: torch.device | str = "cpu") -> Transformer:
        """Validate, load and dequantise a checkpoint directory (see :func:`load_checkpoint`)."""
        config, tensors = load_checkpoint(directory, dtype=dtype)
        return cls(config, tensors, dtype, device)

    def _mtp(self, t: dict[str, torch.Tensor], j: int) -> MtpWeights:
        p = f"mtp.{j}."
        return MtpWeights(t[p + "e_proj.weight"], t[p + "h_proj.weight"], t[p + "enorm.weight"].to(self.dtype),
                          t[p + "hnorm.weight"].to(self.dtype), t[p + "norm.weight"].to(self.dtype),
                          MhcWeights(t[p + "hc_head_fn"], t[p + "hc_head_base"], t[p + "hc_head_scale"]),
                          self._block(t, p, self.config.n_layers + j, None))

    def _block(self, t: dict[str, torch.Tensor], p: str, layer: int, layout) -> BlockWeights:
        ratio = self.config.layer_ratio(layer)

        def compressor(prefix: str) -> CompressorWeights:
            return CompressorWeights(t[prefix + "wkv.weight"], t[prefix + "wgate.weight"], t[prefix + "ape"],
                                     t[prefix + "norm.weight"])

        attn = AttentionWeights(
            wq_a=t[p + "attn.wq_a.weight"], q_norm=t[p + "attn.q_norm.weight"], wq_b=t[p + "attn.wq_b.weight"],
            wkv=t[p + "attn.wkv.weight"], kv_norm=t[p + "attn.kv_norm.weight"], wo_a=t[p + "attn.wo_a.weight"],
            wo_b=t[p + "attn.wo_b.weight"], attn_sink=t[p + "attn.attn_sink"],
            compressor=compressor(p + "attn.compressor.") if ratio else None,
            indexer=IndexerWeights(t[p + "attn.indexer.wq_b.weight"], t[p + "attn.indexer.weights_proj.weight"],
                                   compressor(p + "attn.indexer.compressor.")) if ModelConfig.is_csa(ratio) else None,
        )
        experts = range(self.config.n_routed_experts)
        stack = {w: torch.stack([t[f"{p}ffn.experts.{e}.{w}.weight"] for e in experts]) for w in ("w1", "w3", "w2")}
        shared = None
        if self.config.n_shared_experts:
            shared = tuple(t[f"{p}ffn.shared_experts.{w}.weight"] for w in ("w1", "w3", "w2"))
        hash_routed = is_hash_layer(self.config, layer)
        moe = MoEWeights(t[p + "ffn.gate.weight"], stack["w1"], stack["w3"], stack["w2"],
                         None if hash_routed else t[p + "ffn.gate.bias"],
                         t[p + "ffn.gate.tid2eid"] if hash_routed else None, shared)
        engram = None
        if layout is not None:
            engram = EngramWeights(layout, t[p + "engram.embed.weight"], t[p + "engram.embed.scale"],
                                   t[p + "engram.wkv.weight"], t[p + "engram.norm.weight"])

        def mhc(site: str) -> MhcWeights:
            return MhcWeights(t[f"{p}hc_{site}_fn"], t[f"{p}hc_{site}_base"], t[f"{p}hc_{site}_scale"])

        return BlockWeights(t[p + "attn_norm.weight"], t[p + "ffn_norm.weight"], attn, mhc("attn"), mhc("ffn"),
                            moe, engram)

    def new_cache(self, batch: int, max_len: int | None = None) -> ModelCache:
        """An empty cache for ``batch`` sequences of up to ``max_len`` tokens (default ``config.max_seq_len``)."""
        return ModelCache(self.config, batch, max_len or self.config.max_seq_len, self.dtype, self.device)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, seq_lens, cache: ModelCache, all_logits: bool = False) -> torch.Tensor:
        """Run the new tokens of every sequence through the model, updating ``cache``.

        Args:
            tokens: ``[S_total]`` int64 token ids, ``seq_lens[b]`` consecutive ones per sequence.
            seq_lens: ``[B]`` new tokens per sequence (0 allowed).
            cache: the sequences' :class:`ModelCache`; ``cache.lengths`` advance by ``seq_lens``.
            all_logits: return the logits of every token instead of each sequence's last.

        Returns:
            fp32 logits, ``[B, V]`` of each sequence's last new token (NaN rows for sequences with no new
            token), or ``[S_total, V]`` with ``all_logits``.
        """
        lens = torch.as_tensor(seq_lens, dtype=torch.int64)
        h = self.hidden(tokens, lens, cache)
        if all_logits:
            return self._head(h, self.hc_head, self.norm)
        last = (lens.cumsum(0) - 1).clamp(min=0).to(self.device)  # the head runs on each sequence's last row only
        logits = self._head(h[last], self.hc_head, self.norm)
        return logits.masked_fill((lens == 0).to(self.device)[:, None], float("nan"))

    @torch.inference_mode()
    def hidden(self, tokens: torch.Tensor, seq_lens, cache: ModelCache) -> torch.Tensor:
        """The backbone's output streams ``[S_total, hc_mult, D]`` (before the head), updating ``cache``."""
        config = self.config
        lens = torch.as_tensor(seq_lens, dtype=torch.int64)
        tokens = tokens.to(self.device, torch.int64)
        if lens.shape != (cache.batch,) or int(lens.sum()) != tokens.shape[0]:
            raise ValueError(f"forward: 'seq_lens' must be [{cache.batch}] summing to {tokens.shape[0]}, got {lens}")
        h = F.embedding(tokens, self.embed).unsqueeze(1).expand(-1, config.hc_mult, -1).contiguous()
        engram_inputs = self._engram_inputs(tokens, lens, cache) if config.engram_layer_ids else None
        for layer, block in enumerate(self.blocks):
            if block.engram is not None:
                h = self._engram(h, block.engram, engram_inputs)
            h = self._block_forward(h, block, cache.layers[layer], lens, tokens, layer)
        return h

    @torch.inference_mode()
    def mtp_logits(self, h: torch.Tensor, next_tokens: torch.Tensor, seq_lens, cache: ModelCache,
                   depth: int = 0) -> torch.Tensor:
        """Draft logits ``[S_total, V]`` (fp32) of MTP block ``depth`` for the token after ``next_tokens``.

        ``h`` are :meth:`hidden`'s streams at positions ``t`` and ``next_tokens`` the tokens at ``t + 1``
        (same flattening and ``seq_lens``); the block attends over its own window cache
        (``cache.mtp_layers[depth]``), which advances like a backbone layer's.
        """
        if not 0 <= depth < len(self.mtp):
            raise ValueError(f"mtp_logits: 'depth' must be in [0, {len(self.mtp)}), got {depth}")
        config, mtp = self.config, self.mtp[depth]
        lens = torch.as_tensor(seq_lens, dtype=torch.int64)
        next_tokens = next_tokens.to(self.device, torch.int64)
        if h.shape[0] != next_tokens.shape[0]:
            raise ValueError(f"mtp_logits: 'h' has {h.shape[0]} rows, 'next_tokens' {next_tokens.shape[0]}")
        e = F.linear(rms_norm(F.embedding(next_tokens, self.embed), mtp.enorm, config.norm_eps), mtp.e_proj)
        x = (F.linear(rms_norm(h, mtp.hnorm, config.norm_eps), mtp.h_proj) + e[:, None]).contiguous()
        x = self._block_forward(x, mtp.block, cache.mtp_layers[depth], lens, next_tokens, config.n_layers + depth)
        return self._head(x, mtp.hc_head, mtp.norm)

    def _head(self, h: torch.Tensor, mix: MhcWeights, norm: torch.Tensor) -> torch.Tensor:
        """fp32 logits of every row: ``mhc_head`` collapse, final RMSNorm, LM head."""
        config = self.config
        y = rms_norm(ops.mhc_head(h, mix.fn, mix.scale, mix.base, config.norm_eps, config.hc_eps), norm,
                     config.norm_eps)
        return F.linear(y.float(), self.head.float())

    def _block_forward(self, h, block: BlockWeights, cache: AttentionCache, lens, tokens, layer: int):
        config = self.config
        u, post, comb = ops.mhc_pre(h, block.hc_attn.fn, block.hc_attn.scale, block.hc_attn.base,
                                    config.hc_sinkhorn_iters, config.norm_eps, config.hc_eps)
        attention = ATTENTION[_attention_kind(config.layer_ratio(layer))]
        a = attention(rms_norm(u, block.attn_norm, config.norm_eps), block.attn, cache, lens, config).y
        h = ops.mhc_post(a, h, post, comb)
        u, post, comb = ops.mhc_pre(h, block.hc_ffn.fn, block.hc_ffn.scale, block.hc_ffn.base,
                                    config.hc_sinkhorn_iters, config.norm_eps, config.hc_eps)
        moe = block.moe
        shared = moe.shared or (None, None, None)
        f = ops.moe_ffn(
            rms_norm(u, block.ffn_norm, config.norm_eps), moe.gate, moe.w1, moe.w3, moe.w2,
            config.n_activated_experts, config.route_scale, bias=moe.bias,
            token_ids=tokens if moe.tid2eid is not None else None, tid2eid=moe.tid2eid,
            shared_w1=shared[0], shared_w3=shared[1], shared_w2=shared[2], swiglu_limit=config.swiglu_limit,
        )
        return ops.mhc_post(f, h, post, comb)

    def _engram_inputs(self, tokens, lens, cache: ModelCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per sequence, its compressed ids ``[1, S_b]`` and n-gram history ``[1, N-1]`` before them (a copy);
        then advances the history in ``cache``."""
        ids = tokens if self.token_map is None else self.token_map[tokens]
        per_sequence = ids.split(lens.tolist())
        inputs = [(seq_ids[None], cache.engram_history[b: b + 1].clone()) for b, seq_ids in enumerate(per_sequence)]
        keep = cache.engram_history.shape[1]
        for b, seq_ids in enumerate(per_sequence):
            if len(seq_ids) and keep:
                cache.engram_history[b] = torch.cat((cache.engram_history[b], seq_ids))[-keep:]
        return inputs

    def _engram(self, h: torch.Tensor, weights: EngramWeights, inputs) -> torch.Tensor:
        """V4.1 Engram (§5.3 (c)-(g)): hash + gather in one op, project to per-stream keys + a shared value,
        gated injection."""
        n, D = self.config.hc_mult, self.config.dim
        layout = weights.layout
        hash_args = tuple(t.to(h.device) for t in (layout.multipliers, layout.moduli, layout.offsets))
        embedded = torch.cat([
            ops.engram_hash_lookup(seq_ids, *hash_args, self.config.engram_pad_token_id, weights.table, history,
                                   weights.table_scale, self.dtype)[0]
            for seq_ids, history in inputs
        ])
        kv = F.linear(embedded, weights.wkv)
        return ops.engram_gate(h, kv[:, : n * D].unflatten(-1, (n, D)), kv[:, n * D:], weights.norm)
