"""sparse_attn against independent formulations: a per-row NumPy fp64 loop and flex_attention masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from v4_ascend.layers.indices import compressed_indices, window_positions
from v4_ascend.ops import sparse_attn
from v4_ascend.testing.cases.attention import _idx_with_holes
from v4_ascend.testing.tolerance import TOLERANCE


def dense_oracle(q, kv, idx, sink, scale, extra_kv=None, extra_idx=None, topk_length=None, extra_topk_length=None):
    """Row by row in fp64: softmax over [valid logits | sink], the sink column dropped from the value sum."""
    q, kv = q.double().numpy(), kv.double().numpy()
    T, H, D = q.shape
    out, lse = np.zeros((T, H, D)), np.full((T, H), -np.inf)
    scopes = [(kv, idx.numpy(), topk_length)]
    if extra_kv is not None:
        scopes.append((extra_kv.double().numpy(), extra_idx.numpy(), extra_topk_length))
    for t in range(T):
        rows = []
        for pool, ids, length in scopes:
            limit = ids.shape[1] if length is None else int(length[t])
            rows += [pool[i] for i in ids[t, :limit] if i != -1]
        if not rows:
            continue
        keys = np.stack(rows)
        for h in range(H):
            logits = scale * keys @ q[t, h]
            with_sink = np.append(logits, -np.inf if sink is None else float(sink[h]))
            p = np.exp(with_sink - with_sink.max())
            p /= p.sum()
            out[t, h] = p[:-1] @ keys
            lse[t, h] = logits.max() + math.log(np.exp(logits - logits.max()).sum())
    return torch.from_numpy(out), torch.from_numpy(lse)


def random_problem(T, H, D, N, K, N2=0, K2=0, lengths=False, dtype=torch.float32):
    q = torch.randn(T, H, D, dtype=dtype)
    kv = torch.randn(N, D, dtype=dtype)
    idx = _idx_with_holes(T, K, N, device="cpu", gen=torch.default_generator, hole_fraction=0.3)
    sink = torch.randn(H, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    kwargs = {}
    if N2:
        kwargs["extra_kv"] = torch.randn(N2, D, dtype=dtype)
        kwargs["extra_idx"] = _idx_with_holes(T, K2, N2, device="cpu", gen=torch.default_generator)
    if lengths:
        kwargs["topk_length"] = torch.randint(0, K + 1, (T,), dtype=torch.int32)
        if N2:
            kwargs["extra_topk_length"] = torch.randint(0, K2 + 1, (T,), dtype=torch.int32)
    return q, kv, idx, sink, D**-0.5, kwargs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(
    "shape", [(5, 3, 16, 20, 7, 0, 0, False), (9, 4, 32, 50, 12, 13, 6, True), (2, 64, 512, 40, 16, 8, 4, True)]
)
def test_matches_dense_fp64_oracle(dtype, shape):
    q, kv, idx, sink, scale, kwargs = random_problem(*shape, dtype=dtype)
    idx[0] = -1  # a row with only holes in the first scope
    out, lse = sparse_attn(q, kv, idx, sink, scale, **kwargs)
    want_out, want_lse = dense_oracle(q, kv, idx, sink, scale, **kwargs)
    atol, rtol = TOLERANCE[dtype]
    assert out.dtype == dtype and lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(out.double(), want_out, atol=atol, rtol=rtol)
    torch.testing.assert_close(lse.double(), want_lse, atol=atol, rtol=rtol)


def test_row_without_valid_slot_gives_zero_and_minus_inf():
    q, kv, idx, sink, scale, _ = random_problem(3, 2, 8, 5, 4)
    idx[0, 0] = 3  # row 0 keeps a valid slot whatever the random holes
    idx[1] = -1
    for s in (sink, None):
        out, lse = sparse_attn(q, kv, idx, s, scale, topk_length=torch.tensor([4, 4, 0], dtype=torch.int32))
        assert torch.equal(out[1:], torch.zeros_like(out[1:]))
        assert torch.isneginf(lse[1:]).all() and torch.isfinite(lse[0]).all()


def test_two_scopes_equal_one_concatenated_pool():
    q, kv, idx, sink, scale, kw = random_problem(11, 4, 24, 30, 9, N2=17, K2=7, lengths=True)
    out, lse = sparse_attn(q, kv, idx, sink, scale, **kw)

    def cut(ids, length, offset):
        ids = ids.masked_fill(torch.arange(ids.shape[1])[None] >= length[:, None], -1)
        return torch.where(ids >= 0, ids + offset, ids)

    pool = torch.cat((kv, kw["extra_kv"]))
    joined = torch.cat((cut(idx, kw["topk_length"], 0), cut(kw["extra_idx"], kw["extra_topk_length"], 30)), 1)
    out1, lse1 = sparse_attn(q, pool, joined.to(torch.int32), sink, scale)
    torch.testing.assert_close(out, out1, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(lse, lse1, atol=1e-6, rtol=1e-6)


def test_sink_only_enlarges_the_denominator():
    """A sink of -inf is no sink; a finite sink rescales out by exp(lse) / (exp(lse) + exp(sink))."""
    q, kv, idx, sink, scale, _ = random_problem(6, 3, 16, 12, 5)
    idx[:, 0] = 0
    plain, lse = sparse_attn(q, kv, idx, None, scale)
    torch.testing.assert_close(sparse_attn(q, kv, idx, torch.full((3,), float("-inf")), scale)[0], plain)
    with_sink, lse_sink = sparse_attn(q, kv, idx, sink, scale)
    factor = torch.exp(lse) / (torch.exp(lse) + torch.exp(sink)[None])
    torch.testing.assert_close(with_sink, plain * factor[..., None], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(lse_sink, lse)


def _flex_with_sink(q, keys, mask_mod, sink, scale):
    """flex_attention over one shared K=V head with an explicit mask; the sink folded in through lse."""
    T, H, D = q.shape
    S = keys.shape[0]
    block_mask = create_block_mask(mask_mod, 1, 1, T, S, device="cpu")
    kv = keys[None, None].expand(1, H, S, D)
    out, lse = flex_attention(q.transpose(0, 1)[None], kv, kv, block_mask=block_mask, scale=scale, return_lse=True)
    out, lse = out[0].transpose(0, 1), lse[0].transpose(0, 1)
    return out * (torch.exp(lse) / (torch.exp(lse) + torch.exp(sink)[None]))[..., None]


@pytest.mark.parametrize("T,ratio,window", [(300, 128, 128), (45, 4, 16)])
def test_window_plus_dense_compressed_matches_flex_attention(T, ratio, window):
    """HCA: window [t-W+1, t] over raw keys plus every compressed entry i < (t+1)//ratio."""
    H, D = 4, 32
    q, keys = torch.randn(T, H, D), torch.randn(T, D)
    n = T // ratio
    compressed = torch.randn(n, D)
    sink = torch.randn(H)
    pos = torch.arange(T, dtype=torch.int32)
    idx = window_positions(pos, window)
    extra_idx, extra_len = compressed_indices(pos, ratio)
    out, _ = sparse_attn(q, keys, idx, sink, D**-0.5, compressed, extra_idx, None, extra_len)

    def mask_mod(b, h, q_idx, kv_idx):
        in_window = (kv_idx < T) & (kv_idx <= q_idx) & (kv_idx > q_idx - window)
        visible = (kv_idx >= T) & (kv_idx - T < (q_idx + 1) // ratio)
        return in_window | visible

    want = _flex_with_sink(q, torch.cat((keys, compressed)), mask_mod, sink, D**-0.5)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_window_only_matches_flex_attention():
    T, H, D, W = 200, 2, 16, 128
    q, keys, sink = torch.randn(T, H, D), torch.randn(T, D), torch.randn(H)
    out, _ = sparse_attn(q, keys, window_positions(torch.arange(T, dtype=torch.int32), W), sink, D**-0.5)
    want = _flex_with_sink(q, keys, lambda b, h, qi, ki: (ki <= qi) & (ki > qi - W), sink, D**-0.5)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_gradcheck_fp64():
    q, kv, idx, sink, scale, kw = random_problem(4, 2, 6, 7, 5, N2=5, K2=3, lengths=True, dtype=torch.float64)
    idx[2] = -1
    kw["extra_idx"][2] = -1  # an empty row (out = 0, lse = -inf) must have finite gradients
    inputs = [x.requires_grad_() for x in (q, kv, sink, kw["extra_kv"])]

    def f(q, kv, sink, extra_kv):
        out, lse = sparse_attn(q, kv, idx, sink, scale, extra_kv, kw["extra_idx"], kw["topk_length"],
                               kw["extra_topk_length"])
        return out, lse.masked_fill(torch.isinf(lse), 0.0)

    assert torch.autograd.gradcheck(f, inputs)


def _with_first(idx, value):
    bad = idx.clone()
    bad[0, 0] = value
    return bad


def test_errors_name_the_argument():
    q, kv, idx, sink, scale, _ = random_problem(3, 2, 8, 5, 4)
    with pytest.raises(ValueError, match="'q' must be 3-D"):
        sparse_attn(q[0], kv, idx, sink, scale)
    with pytest.raises(ValueError, match="sparse_attn: 'idx' must be"):
        sparse_attn(q, kv, idx.long(), sink, scale)
    with pytest.raises(ValueError, match="sparse_attn: 'kv' must be"):
        sparse_attn(q, kv.double(), idx, sink, scale)
    with pytest.raises(ValueError, match="'kv' must be on cpu"):
        sparse_attn(q, kv.to("meta"), idx, sink, scale)
    with pytest.raises(ValueError, match=r"sparse_attn: 'idx'.* values must be in \[-1, "):
        sparse_attn(q, kv, _with_first(idx, 5), sink, scale)
    with pytest.raises(ValueError, match=r"sparse_attn: 'idx'.* values must be in \[-1, "):
        sparse_attn(q, kv, _with_first(idx, -2), sink, scale)
    with pytest.raises(ValueError, match="'topk_length' values must be in"):
        sparse_attn(q, kv, idx, sink, scale, topk_length=torch.full((3,), 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="'extra_idx' must be given together"):
        sparse_attn(q, kv, idx, sink, scale, extra_kv=kv)
