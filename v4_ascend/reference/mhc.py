"""Reference kernels of the mHC family (manifold-constrained hyper-connections, v4_math.md §4).

The residual is ``n`` parallel streams ``x [T, n, D]``. ``mhc_pre`` mixes them into one sublayer input
and produces the post weights and the Sinkhorn-projected stream-mixing matrix; ``mhc_post`` writes the
sublayer output back into the streams; ``mhc_head`` collapses the streams before the final norm.
All math is fp32 (fp64 for fp64 inputs); the stream outputs take the dtype of the streams.
"""

from __future__ import annotations

import torch

from v4_ascend import _validation as v
from v4_ascend.reference.attention import accumulation_dtype

# V4 values (v4_math.md §4.5): 20 Sinkhorn iterations, eps 1e-6 for the RMS norm and the mHC epsilon.
V4_SINKHORN_ITERS = 20
V4_EPS = 1e-6
# V4's post multiplier: post_i = 2 * sigmoid(...) (TileKernels' generic default of 1.0 is not V4's).
POST_MULTIPLIER = 2.0


def _check_positive(op: str, arg: str, value: float) -> None:
    if not value > 0:
        v.fail(op, arg, "> 0", value)


def check_mhc_sinkhorn(logits, iters, eps):
    op = "mhc_sinkhorn"
    v.tensor(op, "logits", logits, rank=3, dtypes=v.FLOAT_DTYPES)
    if logits.shape[1] != logits.shape[2]:
        v.fail(op, "logits", "of shape [T, n, n]", tuple(logits.shape))
    if iters < 1:
        v.fail(op, "iters", ">= 1", iters)
    _check_positive(op, "eps", eps)


def _check_projection(op, x, fn, scale, base, mixes: int, n_scales: int):
    """Checks shared by mhc_pre and mhc_head; ``mixes`` is the number of rows of ``fn``."""
    _, n, D = x.shape
    if n < 1 or D < 1:
        v.fail(op, "x", "[T, n, D] with n >= 1 and D >= 1", f"shape {tuple(x.shape)}")
    v.tensor(op, "fn", fn, dtypes=v.FLOAT_DTYPES, shape=(mixes, n * D), device=x.device)
    v.tensor(op, "scale", scale, dtypes=v.FLOAT_DTYPES, shape=(n_scales,), device=x.device)
    v.tensor(op, "base", base, dtypes=v.FLOAT_DTYPES, shape=(mixes,), device=x.device)


def check_mhc_pre(x, fn, scale, base, iters, norm_eps, hc_eps):
    op = "mhc_pre"
    v.tensor(op, "x", x, rank=3, dtypes=v.FLOAT_DTYPES)
    n = x.shape[1]
    _check_projection(op, x, fn, scale, base, (2 + n) * n, 3)
    if iters < 1:
        v.fail(op, "iters", ">= 1", iters)
    _check_positive(op, "norm_eps", norm_eps)
    _check_positive(op, "hc_eps", hc_eps)
    return x.shape


def check_mhc_post(f, x, post, comb):
    op = "mhc_post"
    v.tensor(op, "x", x, rank=3, dtypes=v.FLOAT_DTYPES)
    T, n, D = x.shape
    v.tensor(op, "f", f, shape=(T, D), device=x.device)
    v.same_dtype(op, "f", f, x, "x")
    v.tensor(op, "post", post, dtypes=v.FLOAT_DTYPES, shape=(T, n), device=x.device)
    v.tensor(op, "comb", comb, dtypes=v.FLOAT_DTYPES, shape=(T, n, n), device=x.device)


def check_mhc_head(x, fn, scale, base, norm_eps, hc_eps):
    op = "mhc_head"
    v.tensor(op, "x", x, rank=3, dtypes=v.FLOAT_DTYPES)
    _check_projection(op, x, fn, scale, base, x.shape[1], 1)
    _check_positive(op, "norm_eps", norm_eps)
    _check_positive(op, "hc_eps", hc_eps)
    return x.shape


def _sinkhorn(logits: torch.Tensor, iters: int, eps: float) -> torch.Tensor:
    """Row softmax + eps, column pass, then ``iters - 1`` (row, column) passes; ends on a column pass."""
    m = torch.softmax(logits, dim=-1) + eps
    m = m / (m.sum(dim=-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        m = m / (m.sum(dim=-1, keepdim=True) + eps)
        m = m / (m.sum(dim=-2, keepdim=True) + eps)
    return m


def normalised_mixes(x: torch.Tensor, fn: torch.Tensor, norm_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rho * (fn @ vec(x)), x in the accumulation dtype)``: the weightless RMSNorm folded after the GEMM."""
    acc = accumulation_dtype(x.dtype)
    flat = x.flatten(1).to(acc)
    rho = torch.rsqrt(flat.square().mean(dim=-1, keepdim=True) + norm_eps)
    return (flat @ fn.to(acc).T) * rho, x.to(acc)


def mhc_sinkhorn(logits, iters=V4_SINKHORN_ITERS, eps=V4_EPS):
    check_mhc_sinkhorn(logits, iters, eps)
    return _sinkhorn(logits.to(accumulation_dtype(logits.dtype)), iters, eps)


def mhc_pre(x, fn, scale, base, iters=V4_SINKHORN_ITERS, norm_eps=V4_EPS, hc_eps=V4_EPS):
    T, n, _ = check_mhc_pre(x, fn, scale, base, iters, norm_eps, hc_eps)
    mixes, streams = normalised_mixes(x, fn, norm_eps)
    scale, base = scale.to(mixes.dtype), base.to(mixes.dtype)
    pre = torch.sigmoid(mixes[:, :n] * scale[0] + base[:n]) + hc_eps
    post = POST_MULTIPLIER * torch.sigmoid(mixes[:, n : 2 * n] * scale[1] + base[n : 2 * n])
    logits = (mixes[:, 2 * n :] * scale[2] + base[2 * n :]).view(T, n, n)
    comb = _sinkhorn(logits, iters, hc_eps)
    u = (pre.unsqueeze(-1) * streams).sum(dim=1)
    return u.to(x.dtype), post, comb


def mhc_post(f, x, post, comb):
    check_mhc_post(f, x, post, comb)
    acc = accumulation_dtype(x.dtype)
    # Output stream j takes column j of comb: X'[j] = post_j * f + sum_i comb[i, j] * X[i].
    mixed = torch.einsum("tij,tid->tjd", comb.to(acc), x.to(acc))
    return (post.to(acc).unsqueeze(-1) * f.to(acc).unsqueeze(1) + mixed).to(x.dtype)


def mhc_head(x, fn, scale, base, norm_eps=V4_EPS, hc_eps=V4_EPS):
    check_mhc_head(x, fn, scale, base, norm_eps, hc_eps)
    mixes, streams = normalised_mixes(x, fn, norm_eps)
    pre = torch.sigmoid(mixes * scale.to(mixes.dtype)[0] + base.to(mixes.dtype)) + hc_eps
    return (pre.unsqueeze(-1) * streams).sum(dim=1).to(x.dtype)
