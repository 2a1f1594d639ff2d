"""V4 attention layers (``shared/spec/v4_math.md`` §3.3): sliding window, CSA and HCA.

Each layer function maps the ``attn_norm`` output of the new tokens of a batch of sequences to the
attention output, reading and updating the layer's :class:`~v4_ascend.layers.cache.AttentionCache`.
Tokens are token-flattened: ``x [S_total, D]`` holds ``seq_lens[b]`` new tokens of each cached
sequence ``b`` in order; sequence ``b`` continues at position ``cache.lengths[b]``. One code path
serves prefill (from 0 or chunked from any position) and decode; a call where every sequence has at
most one new token uses the ring-buffer decode window.

The math uses only the public ops (:mod:`v4_ascend.ops`: ``kv_compress``, ``indexer_topk``,
``sparse_attn``, ``grouped_gemm_masked``) plus projections and the helpers of this package.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from v4_ascend import ops
from v4_ascend.layers.cache import AttentionCache
from v4_ascend.layers.indices import compressed_indices, ring_window_indices, window_positions
from v4_ascend.layers.kv_postprocess import (
    fp8_fake_quant_nope,
    indexer_kv_postprocess,
    indexer_rotate_quant,
    main_kv_postprocess,
)
from v4_ascend.layers.norm import head_rms, rms_norm
from v4_ascend.layers.rope import apply_rope, layer_rope_frequencies
from v4_ascend.model.config import ModelConfig


@dataclass
class CompressorWeights:
    """``wkv``/``wgate [c*d, D]`` (c = 2 for CSA), ``ape [ratio, c*d]`` fp32, ``norm [d]``."""

    wkv: torch.Tensor
    wgate: torch.Tensor
    ape: torch.Tensor
    norm: torch.Tensor


@dataclass
class IndexerWeights:
    """Lightning indexer: ``wq_b [H_I*d_I, R_q]``, ``weights_proj [H_I, D]`` and its own compressor."""

    wq_b: torch.Tensor
    weights_proj: torch.Tensor
    compressor: CompressorWeights


@dataclass
class AttentionWeights:
    """One layer's attention parameters (names as in the checkpoint, ``attn.*``)."""

    wq_a: torch.Tensor  # [R_q, D]
    q_norm: torch.Tensor  # [R_q]
    wq_b: torch.Tensor  # [H*d, R_q]
    wkv: torch.Tensor  # [d, D]
    kv_norm: torch.Tensor  # [d]
    wo_a: torch.Tensor  # [G*R_o, H*d/G]
    wo_b: torch.Tensor  # [D, G*R_o]
    attn_sink: torch.Tensor  # [H] fp32
    compressor: CompressorWeights | None = None  # CSA and HCA
    indexer: IndexerWeights | None = None  # CSA only


@dataclass
class AttentionOutput:
    """``y [S_total, D]`` and the compressed candidates each token attended (rows of the flattened
    ``cache.compressed``; ``-1`` = none; ``None`` for window-only layers)."""

    y: torch.Tensor
    compressed_idx: torch.Tensor | None


def window_attention(x, weights, cache, seq_lens, config) -> AttentionOutput:
    """Sliding-window-only layer (ratio 0): 128 raw tokens ``[t-127, t]``, RoPE base 10000, no YaRN."""
    return _attention(x, weights, cache, seq_lens, config, ratio=0)


def csa_attention(x, weights, cache, seq_lens, config) -> AttentionOutput:
    """CSA layer (ratio 4): the window plus the lightning indexer's top-k compressed entries."""
    return _attention(x, weights, cache, seq_lens, config, ratio=4)


def hca_attention(x, weights, cache, seq_lens, config) -> AttentionOutput:
    """HCA layer: the window plus every visible compressed entry ``i < (t+1) // cache.ratio``."""
    if cache.ratio <= 0 or ModelConfig.is_csa(cache.ratio):
        raise ValueError(f"hca_attention: 'cache' must be an HCA layer cache, got ratio {cache.ratio}")
    return _attention(x, weights, cache, seq_lens, config, ratio=cache.ratio)


def _attention(x: torch.Tensor, weights: AttentionWeights, cache: AttentionCache, seq_lens,
               config: ModelConfig, ratio: int) -> AttentionOutput:
    if cache.ratio != ratio:
        raise ValueError(f"attention: 'cache' has ratio {cache.ratio}, the layer needs {ratio}")
    lens = torch.as_tensor(seq_lens, dtype=torch.int64)
    if lens.shape != (cache.batch,) or int(lens.sum()) != x.shape[0]:
        raise ValueError(f"attention: 'seq_lens' must be [{cache.batch}] summing to {x.shape[0]} tokens, got {lens}")
    start = cache.lengths.clone()
    if int((start + lens).max()) > cache.max_len:
        raise ValueError(f"attention: a sequence would exceed the cache's max_len {cache.max_len}")
    device = x.device
    seq = torch.repeat_interleave(torch.arange(cache.batch), lens)
    pos = start[seq] + torch.arange(x.shape[0]) - torch.repeat_interleave(lens.cumsum(0) - lens, lens)
    freqs = layer_rope_frequencies(config, ratio)
    seq, pos = seq.to(device), pos.to(device)

    # Query path (§3.3 steps 1-4); the latent c also feeds the indexer.
    latent = rms_norm(F.linear(x, weights.wq_a), weights.q_norm, config.norm_eps)
    q = F.linear(latent, weights.wq_b).unflatten(-1, (config.n_heads, config.head_dim))
    q = apply_rope(head_rms(q, config.norm_eps), pos, freqs)

    # Raw KV (steps 5-6): K = V, NoPE part FP8-fake-quantised.
    k = apply_rope(rms_norm(F.linear(x, weights.wkv), weights.kv_norm, config.norm_eps), pos, freqs)
    k = fp8_fake_quant_nope(k, config.rope_head_dim)

    compressed_idx = compressed_len = None
    if ratio:
        _compress_into(cache, x, weights.compressor, start, lens, pos, freqs, config, index=False)
        base = (seq * cache.compressed.shape[1]).to(torch.int32)
        if ModelConfig.is_csa(ratio):
            _compress_into(cache, x, weights.indexer.compressor, start, lens, pos, freqs, config, index=True)
            compressed_idx = _indexer_picks(x, latent, weights.indexer, cache, pos, base, freqs, config)
        else:
            compressed_idx, compressed_len = compressed_indices(pos, ratio, base)

    decode = int(lens.max()) <= 1
    pool, window_idx = _window(cache, k, seq, pos, start, lens, decode)
    extra = cache.compressed.flatten(0, 1) if ratio else None
    out, _ = ops.sparse_attn(q, pool, window_idx, weights.attn_sink, config.head_dim**-0.5,
                             extra, compressed_idx, None, compressed_len)
    if not decode:
        _store_window(cache, k, seq, pos, start, lens)
    cache.lengths += lens
    return AttentionOutput(_output_projection(apply_rope(out, pos, freqs, inverse=True), weights, config),
                           compressed_idx)


def _window(cache, k, seq, pos, start, lens, decode):
    """KV pool and ``[S, W]`` window indices (oldest first, the token itself included)."""
    W = cache.config.window_size
    ring = cache.window.flatten(0, 1)
    if decode:  # at most one token per sequence: store it first, then attend the ring
        cache.window[seq, pos % W] = k.to(cache.window.dtype)
        return ring, ring_window_indices(pos, W, base=seq * W)
    # prefill: earlier tokens from the ring, this call's tokens from the fresh rows after it
    positions = window_positions(pos, W).to(torch.int64)
    first_row = (lens.cumsum(0) - lens).to(pos.device)[seq]
    begin = start.to(pos.device)[seq][:, None]
    fresh = ring.shape[0] + first_row[:, None] + positions - begin
    cached = seq[:, None] * W + positions % W
    idx = torch.where(positions >= begin, fresh, cached).masked_fill(positions < 0, -1)
    return torch.cat((ring, k.to(ring.dtype))), idx.to(torch.int32)


def _store_window(cache, k, seq, pos, start, lens):
    """Write each sequence's last ``min(W, len)`` new tokens into its ring."""
    W = cache.config.window_size
    end = (start + lens).to(pos.device)[seq]
    keep = pos >= end - W
    cache.window[seq[keep], pos[keep] % W] = k[keep].to(cache.window.dtype)


def _compress_into(cache, x, weights, start, lens, pos, freqs, config, *, index):
    """Run a compressor on the new tokens and store its completed entries (post-processed) in the cache."""
    state_dtype = cache.state_dtype
    kv = F.linear(x.to(state_dtype), weights.wkv.to(state_dtype))
    score = F.linear(x.to(state_dtype), weights.wgate.to(state_dtype))
    states = (cache.index_kv_state, cache.index_score_state) if index else (cache.kv_state, cache.score_state)
    entries, entry_pos, entry_seq = ops.kv_compress(
        kv, score, weights.ape.to(state_dtype), start.to(torch.int32).to(x.device),
        lens.to(torch.int32).to(x.device), *states, cache.ratio, ModelConfig.is_csa(cache.ratio),
    )
    if entries.shape[0] == 0:
        return
    postprocess = indexer_kv_postprocess if index else main_kv_postprocess
    target = cache.index_keys if index else cache.compressed
    slots = entry_pos.long() // cache.ratio
    target[entry_seq.long(), slots] = postprocess(entries, entry_pos.long(), weights.norm, freqs,
                                                  config.norm_eps, target.dtype)


def _indexer_picks(x, latent, weights, cache, pos, base, freqs, config):
    """Lightning indexer (§3.5): rotated FP4 queries, weighted-ReLU scores, top-k over visible entries."""
    q = F.linear(latent, weights.wq_b).unflatten(-1, (config.index_n_heads, config.index_head_dim))
    q = indexer_rotate_quant(apply_rope(q, pos, freqs))
    head_weights = F.linear(x, weights.weights_proj).float()
    head_weights = head_weights * (config.index_head_dim**-0.5 * config.index_n_heads**-0.5)
    keys = cache.index_keys.flatten(0, 1)
    return ops.indexer_topk(q.to(keys.dtype), keys, head_weights, pos.to(torch.int32), cache.ratio,
                            config.index_topk, base)


def _output_projection(out, weights, config):
    """Grouped low-rank output projection (steps 8-10): per group ``W_oa[g]``, then ``W_ob``."""
    S = out.shape[0]
    G = config.o_groups
    groups = out.reshape(S, G, config.n_heads // G * config.head_dim).transpose(0, 1).contiguous()  # [G, S, H/G*d]
    per_group = weights.wo_a.unflatten(0, (G, config.o_lora_rank))  # [G, R_o, H/G*d]
    counts = torch.full((G,), S, dtype=torch.int32, device=out.device)
    low_rank = ops.grouped_gemm_masked(groups, per_group, counts)  # [G, S, R_o]
    return F.linear(low_rank.transpose(0, 1).reshape(S, G * config.o_lora_rank), weights.wo_b)
