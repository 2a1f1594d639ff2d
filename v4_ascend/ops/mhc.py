"""mHC family declarations: Sinkhorn projection, stream mix-in (pre), write-back (post) and head collapse."""

from __future__ import annotations

import torch

from v4_ascend import library
from v4_ascend.reference import mhc as ref
from v4_ascend.reference.attention import accumulation_dtype
from v4_ascend.reference.mhc import V4_EPS, V4_SINKHORN_ITERS


def _mhc_sinkhorn_fake(logits, iters=V4_SINKHORN_ITERS, eps=V4_EPS):
    ref.check_mhc_sinkhorn(logits, iters, eps)
    return logits.new_empty(logits.shape, dtype=accumulation_dtype(logits.dtype))


def _mhc_pre_fake(x, fn, scale, base, iters=V4_SINKHORN_ITERS, norm_eps=V4_EPS, hc_eps=V4_EPS):
    T, n, D = ref.check_mhc_pre(x, fn, scale, base, iters, norm_eps, hc_eps)
    acc = accumulation_dtype(x.dtype)
    return x.new_empty(T, D), x.new_empty(T, n, dtype=acc), x.new_empty(T, n, n, dtype=acc)


def _mhc_post_fake(f, x, post, comb):
    ref.check_mhc_post(f, x, post, comb)
    return torch.empty_like(x)


def _mhc_head_fake(x, fn, scale, base, norm_eps=V4_EPS, hc_eps=V4_EPS):
    T, _, D = ref.check_mhc_head(x, fn, scale, base, norm_eps, hc_eps)
    return x.new_empty(T, D)


MHC_SINKHORN = library.define(
    f"mhc_sinkhorn(Tensor logits, int iters={V4_SINKHORN_ITERS}, float eps={V4_EPS}) -> Tensor",
    family="mhc",
    reference=ref.mhc_sinkhorn,
    fake=_mhc_sinkhorn_fake,
    differentiable=True,
)

MHC_PRE = library.define(
    f"mhc_pre(Tensor x, Tensor fn, Tensor scale, Tensor base, int iters={V4_SINKHORN_ITERS}, "
    f"float norm_eps={V4_EPS}, float hc_eps={V4_EPS}) -> (Tensor, Tensor, Tensor)",
    family="mhc",
    reference=ref.mhc_pre,
    fake=_mhc_pre_fake,
    differentiable=True,
)

MHC_POST = library.define(
    "mhc_post(Tensor f, Tensor x, Tensor post, Tensor comb) -> Tensor",
    family="mhc",
    reference=ref.mhc_post,
    fake=_mhc_post_fake,
    differentiable=True,
)

MHC_HEAD = library.define(
    f"mhc_head(Tensor x, Tensor fn, Tensor scale, Tensor base, float norm_eps={V4_EPS}, "
    f"float hc_eps={V4_EPS}) -> Tensor",
    family="mhc",
    reference=ref.mhc_head,
    fake=_mhc_head_fake,
    differentiable=True,
)


def mhc_sinkhorn(logits: torch.Tensor, iters: int = V4_SINKHORN_ITERS, eps: float = V4_EPS) -> torch.Tensor:
    """Sinkhorn-Knopp projection of mixing logits onto (nearly) doubly stochastic matrices.

    ``M = softmax_rows(logits) + eps``, ``M /= colsum(M) + eps``, then ``iters - 1`` times
    ``M /= rowsum(M) + eps; M /= colsum(M) + eps``. It ends on a column pass, so column sums are 1 to
    O(eps) and row sums only approximately 1.

    Args:
        logits: ``[T, n, n]`` float mixing logits (row-major ``Λ[i][j]``).
        iters: Sinkhorn iterations, >= 1 (V4: 20; one iteration = softmax + one column pass).
        eps: the mHC epsilon, > 0 (V4: 1e-6).

    Returns:
        ``[T, n, n]`` fp32 (fp64 for fp64 logits): a probability matrix is kept in fp32 whatever the
        input dtype, as ``mhc_pre``'s ``comb``.

    Raises:
        ValueError: naming the argument, for a non-square or non-3-D ``logits``, ``iters < 1`` or
            ``eps <= 0``.
    """
    return torch.ops.v4_ascend.mhc_sinkhorn.default(logits, iters, eps)


def mhc_pre(
    x: torch.Tensor,
    fn: torch.Tensor,
    scale: torch.Tensor,
    base: torch.Tensor,
    iters: int = V4_SINKHORN_ITERS,
    norm_eps: float = V4_EPS,
    hc_eps: float = V4_EPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mHC pre-mix: the sublayer input, the post weights and the stream-mixing matrix of one site.

    Per token, with ``v = vec(x) in R^{nD}`` and ``m = (fn @ v) / sqrt(mean(v^2) + norm_eps)``:
    ``pre_i = sigmoid(scale[0] m[i] + base[i]) + hc_eps``,
    ``post_i = 2 sigmoid(scale[1] m[n+i] + base[n+i])`` (V4's post multiplier 2),
    ``comb = mhc_sinkhorn(scale[2] m[2n:] + base[2n:] as n x n row-major, iters, hc_eps)`` and
    ``u = sum_i pre_i x[i]``.

    Args:
        x: ``[T, n, D]`` bf16/fp16/fp32/fp64 residual streams (V4: n = 4).
        fn: ``[(2+n)*n, n*D]`` float projection (``hc_attn_fn`` / ``hc_ffn_fn``, fp32 in V4).
        scale: ``[3]`` float scales ``(alpha_pre, alpha_post, alpha_comb)``.
        base: ``[(2+n)*n]`` float biases.
        iters: Sinkhorn iterations, >= 1 (V4: 20).
        norm_eps: eps of the weightless RMS norm over the flattened streams (V4: 1e-6).
        hc_eps: the mHC epsilon added to ``pre`` and used by Sinkhorn (V4: 1e-6).

    Returns:
        ``u [T, D]`` in the dtype of ``x``, ``post [T, n]`` and ``comb [T, n, n]`` fp32 (fp64 for fp64
        ``x``). All math is fp32 (fp64 for fp64 ``x``); the parameters are upcast.

    Raises:
        ValueError: naming the argument, for wrong ranks/shapes/dtypes/devices, ``iters < 1`` or an eps
            that is not positive.
    """
    return torch.ops.v4_ascend.mhc_pre.default(x, fn, scale, base, iters, norm_eps, hc_eps)


def mhc_post(f: torch.Tensor, x: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
    """mHC post-mix: write the sublayer output back into the streams with the transposed mixing matrix.

    ``out[t, j] = post[t, j] * f[t] + sum_i comb[t, i, j] * x[t, i]``: output stream ``j`` takes
    **column** ``j`` of ``comb``.

    Args:
        f: ``[T, D]`` sublayer output, same dtype as ``x``.
        x: ``[T, n, D]`` the streams that entered ``mhc_pre``.
        post: ``[T, n]`` float post weights from ``mhc_pre``.
        comb: ``[T, n, n]`` float mixing matrix from ``mhc_pre``.

    Returns:
        ``[T, n, D]`` in the dtype of ``x``, computed in fp32 (fp64 for fp64 ``x``).

    Raises:
        ValueError: naming the argument, for wrong ranks/shapes/dtypes/devices.
    """
    return torch.ops.v4_ascend.mhc_post.default(f, x, post, comb)


def mhc_head(
    x: torch.Tensor,
    fn: torch.Tensor,
    scale: torch.Tensor,
    base: torch.Tensor,
    norm_eps: float = V4_EPS,
    hc_eps: float = V4_EPS,
) -> torch.Tensor:
    """mHC head collapse before the final norm: ``y = sum_i a_i x[i]``, no Sinkhorn and no post.

    ``a_i = sigmoid(scale[0] m[i] + base[i]) + hc_eps`` with ``m = (fn @ vec(x)) / sqrt(mean(vec(x)^2) +
    norm_eps)``.

    Args:
        x: ``[T, n, D]`` bf16/fp16/fp32/fp64 residual streams.
        fn: ``[n, n*D]`` float projection (``hc_head_fn``).
        scale: ``[1]`` float scale.
        base: ``[n]`` float biases.
        norm_eps: eps of the weightless RMS norm (V4: 1e-6).
        hc_eps: added to each mixing weight (V4: 1e-6).

    Returns:
        ``y [T, D]`` in the dtype of ``x``, computed in fp32 (fp64 for fp64 ``x``).

    Raises:
        ValueError: naming the argument, for wrong ranks/shapes/dtypes/devices or a non-positive eps.
    """
    return torch.ops.v4_ascend.mhc_head.default(x, fn, scale, base, norm_eps, hc_eps)
