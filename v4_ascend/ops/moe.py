"""MoE family declarations: grouped GEMMs, routing, dispatch/combine, clamped SwiGLU and the fused MoE FFN.

The pieces compose as V4's MoE layer (``v4_math.md`` §6)::

    weights, idx = moe_route(logits, topk, route_scale, bias)           # or hash routing
    rows, offsets, slots = moe_dispatch(x, idx, num_experts)            # contiguous layout
    h = moe_swiglu(grouped_gemm(rows, w1, offsets), grouped_gemm(rows, w3, offsets), 10.0, row_weights)
    y = moe_combine(grouped_gemm(h, w2, offsets), slots, torch.ones_like(weights))

and :func:`moe_ffn` runs the whole chain (with a shared expert and quantised weights) in one op.
"""

from __future__ import annotations

import inspect

import torch

from v4_ascend import library
from v4_ascend.reference import moe as ref


def _grouped_gemm_fake(x, w, offsets):
    M, N = ref.check_grouped_gemm(x, w, offsets)
    return x.new_empty(M, N)


def _grouped_gemm_masked_fake(x, w, counts):
    Mmax, N = ref.check_grouped_gemm_masked(x, w, counts)
    return x.new_empty(x.shape[0], Mmax, N)


GROUPED_GEMM = library.define(
    "grouped_gemm(Tensor x, Tensor w, Tensor offsets) -> Tensor",
    family="moe",
    reference=ref.grouped_gemm,
    fake=_grouped_gemm_fake,
    differentiable=True,
)

GROUPED_GEMM_MASKED = library.define(
    "grouped_gemm_masked(Tensor x, Tensor w, Tensor counts) -> Tensor",
    family="moe",
    reference=ref.grouped_gemm_masked,
    fake=_grouped_gemm_masked_fake,
    differentiable=True,
)


def grouped_gemm(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Contiguous grouped GEMM: ``y[r] = x[r] @ w[g(r)].T`` with rows sorted by group.

    Args:
        x: ``[M, K]`` float rows, sorted by group.
        w: ``[G, N, K]`` one Linear-layout matrix per group, same dtype as ``x``.
        offsets: ``[G]`` int32 cumulative end row of each group (``torch._grouped_mm`` convention):
            group ``g`` owns rows ``offsets[g-1]:offsets[g]``. Empty groups are legal; rows at or past
            ``offsets[-1]`` are zero in the output.

    Returns:
        ``y [M, N]`` in the input dtype, accumulated in fp32 (fp64 for fp64 inputs).

    Raises:
        ValueError: naming the argument, for wrong shapes/dtypes or decreasing / too-large offsets.
    """
    return torch.ops.v4_ascend.grouped_gemm.default(x, w, offsets)


def grouped_gemm_masked(x: torch.Tensor, w: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Masked grouped GEMM for decode: ``y[g, m] = x[g, m] @ w[g].T`` for ``m < counts[g]``, else 0.

    Args:
        x: ``[G, Mmax, K]`` float, rows of group ``g`` padded to ``Mmax``.
        w: ``[G, N, K]`` same dtype as ``x``.
        counts: ``[G]`` int32 valid rows per group, each in ``[0, Mmax]``.

    Returns:
        ``y [G, Mmax, N]`` in the input dtype; rows past ``counts[g]`` are exactly zero.
    """
    return torch.ops.v4_ascend.grouped_gemm_masked.default(x, w, counts)


def _moe_route_fake(logits, topk, route_scale, bias=None, token_ids=None, tid2eid=None):
    T, k = ref.check_moe_route(logits, topk, route_scale, bias, token_ids, tid2eid)
    return logits.new_empty(T, k), logits.new_empty((T, k), dtype=torch.int32)


def _moe_dispatch_fake(x, idx, num_experts):
    M, D = ref.check_moe_dispatch(x, idx, num_experts)
    int32 = dict(dtype=torch.int32)
    return x.new_empty(M, D), x.new_empty((num_experts,), **int32), x.new_empty((M,), **int32)


def _moe_combine_fake(y, slots, weights):
    T, N = ref.check_moe_combine(y, slots, weights)
    return y.new_empty(T, N)


def _moe_swiglu_fake(gate, up, limit=10.0, weight=None):
    ref.check_moe_swiglu(gate, up, limit, weight)
    return torch.empty_like(gate)


def _moe_ffn_fake(*args, **kwargs):
    bound = inspect.signature(ref.moe_ffn).bind(*args, **kwargs)
    bound.apply_defaults()
    ref.check_moe_ffn(*bound.args)
    return torch.empty_like(bound.arguments["x"])


MOE_ROUTE = library.define(
    "moe_route(Tensor logits, int topk, float route_scale, Tensor? bias=None, Tensor? token_ids=None, "
    "Tensor? tid2eid=None) -> (Tensor, Tensor)",
    family="moe",
    reference=ref.moe_route,
    fake=_moe_route_fake,
    differentiable=True,
)

MOE_DISPATCH = library.define(
    "moe_dispatch(Tensor x, Tensor idx, int num_experts) -> (Tensor, Tensor, Tensor)",
    family="moe",
    reference=ref.moe_dispatch,
    fake=_moe_dispatch_fake,
    differentiable=True,
)

MOE_COMBINE = library.define(
    "moe_combine(Tensor y, Tensor slots, Tensor weights) -> Tensor",
    family="moe",
    reference=ref.moe_combine,
    fake=_moe_combine_fake,
    differentiable=True,
)

MOE_SWIGLU = library.define(
    "moe_swiglu(Tensor gate, Tensor up, float limit=10.0, Tensor? weight=None) -> Tensor",
    family="moe",
    reference=ref.moe_swiglu,
    fake=_moe_swiglu_fake,
    differentiable=True,
)

MOE_FFN = library.define(
    "moe_ffn(Tensor x, Tensor gate, Tensor w1, Tensor w3, Tensor w2, int topk, float route_scale, "
    "Tensor? bias=None, Tensor? token_ids=None, Tensor? tid2eid=None, Tensor? w1_scale=None, "
    "Tensor? w3_scale=None, Tensor? w2_scale=None, Tensor? shared_w1=None, Tensor? shared_w3=None, "
    "Tensor? shared_w2=None, Tensor? shared_w1_scale=None, Tensor? shared_w3_scale=None, "
    "Tensor? shared_w2_scale=None, float swiglu_limit=10.0, float shared_swiglu_limit=0.0) -> Tensor",
    family="moe",
    reference=ref.moe_ffn,
    fake=_moe_ffn_fake,
)


def moe_route(
    logits: torch.Tensor,
    topk: int,
    route_scale: float,
    bias: torch.Tensor | None = None,
    token_ids: torch.Tensor | None = None,
    tid2eid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V4 router: sqrt-softplus scores, biased top-k selection (or hash routing), normalised weights.

    ``s = sqrt(softplus(logits))`` with ``softplus(x) = x`` for ``x > 20``. Learned layers select the
    ``topk`` largest ``s + bias`` (the bias only selects); hash layers take ``idx = tid2eid[token_ids]``
    and ignore ``bias``. Weights use the unbiased scores: ``s[idx] / sum(s[idx]) * route_scale``, with no
    epsilon in the sum (as the V4 reference; scores underflowing to 0 for every pick give NaN).

    ``idx`` is ordered by decreasing selection score; equal scores are ordered, and chosen, by lower
    expert index first. Hash-routed rows keep the table's order.

    Args:
        logits: ``[T, E]`` fp32 (fp64 for gradcheck) gate logits ``x @ W_g.T``.
        topk: experts per token, in ``[1, E]`` (V4: 6).
        route_scale: weight multiplier (Flash 1.5, Pro 2.5).
        bias: ``[E]`` fp32 load-balancing bias for selection, or None.
        token_ids: ``[T]`` int32/int64 token ids for hash routing, with ``tid2eid``.
        tid2eid: ``[V, topk]`` int32/int64 expert table of a hash layer, values in ``[0, E)``.

    Returns:
        ``weights [T, topk]`` in the logits dtype (differentiable w.r.t. ``logits``) and
        ``idx [T, topk]`` int32.

    Raises:
        ValueError: naming the argument for a wrong shape/dtype, ``topk`` outside ``[1, E]``, only one of
            ``token_ids``/``tid2eid``, or a token id / table entry out of range.
    """
    return torch.ops.v4_ascend.moe_route.default(logits, topk, route_scale, bias, token_ids, tid2eid)


def moe_dispatch(
    x: torch.Tensor, idx: torch.Tensor, num_experts: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Permute token rows by expert into the contiguous grouped layout of :func:`grouped_gemm`.

    Every valid slot ``(t, j)`` of ``idx`` becomes one row ``x[t]``; rows are sorted by expert, then by
    token, then by slot. Slots with ``idx == -1`` (e.g. experts on another rank) go after the last
    group as zero rows, so the output has a fixed ``T * k`` rows.

    Args:
        x: ``[T, D]`` float token rows.
        idx: ``[T, k]`` int32 experts per token, in ``[0, num_experts)`` or ``-1``.
        num_experts: ``E``, the number of groups.

    Returns:
        ``rows [T*k, D]`` (``x``'s dtype, differentiable), ``offsets [E]`` int32 cumulative end row of
        each expert (``grouped_gemm`` convention), ``slots [T*k]`` int32 flat slot ``t * k + j`` of each
        row (``-1`` for the padding rows), to be passed to :func:`moe_combine`.

    Raises:
        ValueError: naming ``x``, ``idx`` or ``num_experts``, or for an expert index out of range.
    """
    return torch.ops.v4_ascend.moe_dispatch.default(x, idx, num_experts)


def moe_combine(y: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted un-permute: ``out[t] = sum_j weights[t, j] * y[row of slot (t, j)]``, summed in fp32.

    Pass ``torch.ones_like(weights)`` for a plain sum (V4 applies the weight before the down
    projection, see :func:`moe_swiglu`).

    Args:
        y: ``[M, N]`` float rows in the layout of :func:`moe_dispatch`.
        slots: ``[M]`` int32 flat slot ``t * k + j`` of each row, ``-1`` for rows to drop.
        weights: ``[T, k]`` float routing weights.

    Returns:
        ``[T, N]`` in ``y``'s dtype; a token with no valid row gets zeros. Differentiable.

    Raises:
        ValueError: naming the argument, or for a slot outside ``[-1, T*k)``.
    """
    return torch.ops.v4_ascend.moe_combine.default(y, slots, weights)


def moe_swiglu(
    gate: torch.Tensor, up: torch.Tensor, limit: float = 10.0, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """V4's clamped SwiGLU: ``h = silu(min(gate, limit)) * clamp(up, -limit, limit) * weight``, in fp32.

    The gate is clamped only from above, the up projection on both sides. ``limit <= 0`` disables the
    clamp (as the V4 reference, whose shared expert runs unclamped). The routing ``weight`` multiplies
    ``h`` before the down projection, in fp32, and the result is rounded once to the input dtype.

    Args:
        gate: ``[..., I]`` float, the ``w1`` projection.
        up: ``[..., I]`` same dtype, the ``w3`` projection.
        limit: the SwiGLU limit (V4: 10.0).
        weight: ``[...]`` float per-row routing weight, or None.

    Returns:
        ``h [..., I]`` in ``gate``'s dtype. Differentiable.

    Raises:
        ValueError: naming ``gate``, ``up``, ``limit`` or ``weight``.
    """
    return torch.ops.v4_ascend.moe_swiglu.default(gate, up, limit, weight)


def moe_ffn(
    x: torch.Tensor,
    gate: torch.Tensor,
    w1: torch.Tensor,
    w3: torch.Tensor,
    w2: torch.Tensor,
    topk: int,
    route_scale: float,
    bias: torch.Tensor | None = None,
    token_ids: torch.Tensor | None = None,
    tid2eid: torch.Tensor | None = None,
    w1_scale: torch.Tensor | None = None,
    w3_scale: torch.Tensor | None = None,
    w2_scale: torch.Tensor | None = None,
    shared_w1: torch.Tensor | None = None,
    shared_w3: torch.Tensor | None = None,
    shared_w2: torch.Tensor | None = None,
    shared_w1_scale: torch.Tensor | None = None,
    shared_w3_scale: torch.Tensor | None = None,
    shared_w2_scale: torch.Tensor | None = None,
    swiglu_limit: float = 10.0,
    shared_swiglu_limit: float = 0.0,
) -> torch.Tensor:
    """Fused V4 MoE FFN: route -> dispatch -> grouped GEMM -> clamped SwiGLU x weight -> grouped GEMM ->
    combine, plus the shared expert.

    Per token ``t`` with routed experts ``e`` and weights ``w_e``, as the V4 reference ``MoE``:
    ``a = x`` (FP8 fake-quantised, 1x128 UE8M0 blocks, for a quantised weight, as V4's ``Linear``);
    ``g = w1_e a``, ``u = w3_e a`` (GEMMs accumulate in fp32, outputs in ``x``'s dtype);
    ``h = moe_swiglu(g, u, swiglu_limit, w_e)``; ``y_e = w2_e h``; the shared expert likewise with
    ``shared_swiglu_limit`` and no weight; ``out = sum_e y_e + y_shared`` summed in fp32, then rounded to
    ``x``'s dtype. The router sees ``logits = x @ gate.T`` in fp32 (fp64 for fp64 ``x``).

    Weights may be given in three formats, each matrix independently ("Linear" layout ``[N, K]``):
    float (any float dtype, ``*_scale`` None); FP8 ``float8_e4m3fn`` ``[.., N, K]`` with 128x128 block
    scales ``[.., ceil(N/128), ceil(K/128)]``; FP4 packed ``uint8`` / ``float4_e2m1fn_x2`` ``[.., N, K/2]``
    with 1x32 scales ``[.., N, K/32]`` (scales fp32 or UE8M0 bytes, as :mod:`v4_ascend.ops.quant`).
    This reference **dequantises** quantised weights exactly to fp32 and runs fp32 GEMMs on the FP8
    fake-quantised activations, which equals V4's ``fp8_gemm`` / ``fp4_gemm`` up to fp32 summation order.
    Quantised weights need input dims that are multiples of 128.

    Args:
        x: ``[T, D]`` float (bf16 in V4), the ``ffn_norm`` output.
        gate: ``[E, D]`` router weight.
        w1, w3: ``[E, I, D]`` gate and up projections (or quantised forms); ``w2``: ``[E, D, I]``.
        topk, route_scale, bias, token_ids, tid2eid: as :func:`moe_route`.
        w1_scale, w3_scale, w2_scale: scales of quantised routed weights, else None.
        shared_w1, shared_w3, shared_w2: ``[Is, D]``, ``[Is, D]``, ``[D, Is]`` shared expert (all or none).
        shared_w1_scale, shared_w3_scale, shared_w2_scale: their scales when quantised.
        swiglu_limit: clamp of the routed experts (V4: 10.0).
        shared_swiglu_limit: clamp of the shared expert (V4 reference: 0.0, unclamped; some ports use 10).

    Returns:
        ``[T, D]`` in ``x``'s dtype. No autograd (compose the differentiable pieces for training).

    Raises:
        ValueError: naming the argument for a wrong shape/dtype/format, a missing or unexpected scale,
            a partial shared expert, or any :func:`moe_route` error.
    """
    return torch.ops.v4_ascend.moe_ffn.default(
        x, gate, w1, w3, w2, topk, route_scale, bias, token_ids, tid2eid, w1_scale, w3_scale, w2_scale,
        shared_w1, shared_w3, shared_w2, shared_w1_scale, shared_w3_scale, shared_w2_scale, swiglu_limit,
        shared_swiglu_limit,
    )
