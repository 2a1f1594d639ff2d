"""MoE family declarations: grouped GEMMs over experts."""

from __future__ import annotations

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
