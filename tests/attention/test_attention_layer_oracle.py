"""Each attention layer type against a dense per-token formulation of v4_math.md §3.3 written here."""

from __future__ import annotations

import pytest
import torch

from v4_ascend.layers.attention import csa_attention, hca_attention, window_attention
from v4_ascend.layers.cache import AttentionCache
from v4_ascend.layers.kv_postprocess import fp8_fake_quant_nope, indexer_rotate_quant
from v4_ascend.layers.rope import layer_rope_frequencies
from v4_ascend.ops import kv_compress_pool
from v4_ascend.testing.attention_weights import random_attention_weights, tiny_config

CONFIG = tiny_config()
DTYPE = torch.float64


def rope(v, positions, freqs, inverse=False):
    """Complex multiplication of interleaved pairs of the last 2*len(freqs) channels."""
    dr = 2 * freqs.numel()
    angle = positions.double()[:, None] * freqs[None]
    turn = torch.polar(torch.ones_like(angle), -angle if inverse else angle)
    turn = turn.view(v.shape[0], *([1] * (v.dim() - 2)), -1)
    tail = torch.view_as_complex(v[..., -dr:].reshape(*v.shape[:-1], dr // 2, 2).contiguous())
    return torch.cat((v[..., :-dr], torch.view_as_real(tail * turn).flatten(-2)), dim=-1)


def rms(v, weight=None, eps=CONFIG.norm_eps):
    out = v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + eps)
    return out if weight is None else out * weight


def compressed_entries(x, cw, ratio, freqs, index):
    pooled = kv_compress_pool((x @ cw.wkv.T)[None], (x @ cw.wgate.T)[None], cw.ape.double(), ratio, ratio == 4)[0]
    entries = rope(rms(pooled, cw.norm), torch.arange(pooled.shape[0]) * ratio, freqs)
    return indexer_rotate_quant(entries) if index else fp8_fake_quant_nope(entries, CONFIG.rope_head_dim)


def indexer_oracle(x, w, freqs, ratio):
    """Picks by explicit scores: sum_h w[t,h] relu(q[t,h] . k[i]) over i < (t+1)//4, sorted by (-score, i)."""
    T = x.shape[0]
    latent = rms(x @ w.wq_a.T, w.q_norm)
    q = (latent @ w.indexer.wq_b.T).view(T, CONFIG.index_n_heads, CONFIG.index_head_dim)
    q = indexer_rotate_quant(rope(q, torch.arange(T), freqs))
    keys = compressed_entries(x, w.indexer.compressor, ratio, freqs, index=True)
    head_w = (x @ w.indexer.weights_proj.T).float().double()
    head_w = head_w * (CONFIG.index_head_dim**-0.5 * CONFIG.index_n_heads**-0.5)
    picks = torch.full((T, CONFIG.index_topk), -1, dtype=torch.int32)
    for t in range(T):
        scored = [(-float((head_w[t] * torch.relu(q[t] @ keys[i])).sum()), i) for i in range((t + 1) // ratio)]
        chosen = [i for _, i in sorted(scored)[: CONFIG.index_topk]]
        picks[t, : len(chosen)] = torch.tensor(chosen, dtype=torch.int32)
    return picks


def dense_layer(x, w, ratio, picks=None):
    T, H, d, W = x.shape[0], CONFIG.n_heads, CONFIG.head_dim, CONFIG.window_size
    pos = torch.arange(T)
    freqs = layer_rope_frequencies(CONFIG, ratio)
    q = rope(rms((rms(x @ w.wq_a.T, w.q_norm) @ w.wq_b.T).view(T, H, d)), pos, freqs)
    k = fp8_fake_quant_nope(rope(rms(x @ w.wkv.T, w.kv_norm), pos, freqs), CONFIG.rope_head_dim)
    entries = compressed_entries(x, w.compressor, ratio, freqs, index=False) if ratio else None
    out = torch.zeros(T, H, d, dtype=DTYPE)
    for t in range(T):
        keys = [k[s] for s in range(max(0, t - W + 1), t + 1)]
        if ratio == 4:
            keys += [entries[i] for i in picks[t].tolist() if i >= 0]
        elif ratio:
            keys += [entries[i] for i in range((t + 1) // ratio)]
        K = torch.stack(keys)
        logits = d**-0.5 * q[t] @ K.T  # [H, n]
        sink = w.attn_sink.double()
        top = torch.maximum(logits.max(1).values, sink)
        p = torch.exp(logits - top[:, None])
        out[t] = (p @ K) / (p.sum(1) + torch.exp(sink - top))[:, None]
    out = rope(out, pos, freqs, inverse=True)
    G = CONFIG.o_groups
    per_group = torch.einsum("tgk,grk->tgr", out.reshape(T, G, -1), w.wo_a.view(G, CONFIG.o_lora_rank, -1))
    return per_group.reshape(T, -1) @ w.wo_b.T


@pytest.mark.parametrize("ratio,layer", [(0, window_attention), (4, csa_attention), (16, hca_attention)])
def test_layer_matches_dense_per_token_formulation(ratio, layer):
    T = 37
    w = random_attention_weights(CONFIG, ratio, DTYPE, torch.Generator().manual_seed(ratio))
    x = torch.randn(T, CONFIG.dim, dtype=DTYPE)
    got = layer(x, w, AttentionCache(CONFIG, ratio, 1, 64, DTYPE), [T], CONFIG)
    picks = None
    if ratio == 4:
        picks = indexer_oracle(x, w, layer_rope_frequencies(CONFIG, ratio), ratio)
        assert torch.equal(got.compressed_idx, picks)
    torch.testing.assert_close(got.y, dense_layer(x, w, ratio, picks), atol=1e-10, rtol=1e-10)
