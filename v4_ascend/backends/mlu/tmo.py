"""The one adapter over torch_mlu_ops (tmo): every tmo call v4_ascend makes goes through this module.

tmo is closed source and its Python signatures change between releases (argument order, and names such
as the attention sink, ``learnable_sink`` in some releases and ``sink`` in others). So:

- the supported releases are pinned here (:data:`SUPPORTED`) and checked at run time
  (:func:`version_problem`), before any kernel is registered;
- every call passes arguments by keyword, and names that differ between releases are resolved from the
  installed function's signature (:func:`_keyword`), so a release that renames or reorders arguments
  fails loudly instead of silently binding a tensor to the wrong parameter.

torch_mlu_ops is imported lazily (never at v4_ascend import time).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import re
import sys

import torch

MODULE = "torch_mlu_ops"

# Supported releases (vendors.md section 3): torch_mlu_ops 1.13.x ships with torch_mlu 1.34.1, built
# against torch 2.13.0 (CNToolkit 4.7.6, CNNL 2.2.18). Values are version prefixes.
SUPPORTED = {"torch_mlu_ops": ("1.13",), "torch_mlu": ("1.34.1",), "torch": ("2.13.0",)}

_VERSION = re.compile(r"v?(\d+(?:\.\d+)*)")


def _release(version: str) -> tuple[int, ...] | None:
    """``(1, 13, 0)`` from ``'1.13.0'``, ``'v1.13.0+mlu'`` or ``'1.13.0-torch2.13'``; None if unreadable."""
    match = _VERSION.match(version.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def _matches(version: str, prefixes: tuple[str, ...]) -> bool:
    release = _release(version)
    if release is None:
        return False
    return any(release[: len(p.split("."))] == _release(p) for p in prefixes)


def supported_text() -> str:
    """The supported set, for messages and docs."""
    return (
        f"torch_mlu_ops {'/'.join(v + '.x' for v in SUPPORTED['torch_mlu_ops'])} with torch_mlu "
        f"{'/'.join(SUPPORTED['torch_mlu'])} and torch {'/'.join(SUPPORTED['torch'])}"
    )


def check_versions(tmo_version: str | None, torch_mlu_version: str | None, torch_version: str) -> str | None:
    """None when this combination is supported, else why not (pure function of the version strings).

    ``torch_mlu_version`` is None when torch_mlu is not loaded in the process (the simulated device).
    """
    if tmo_version is None:
        return f"cannot read the torch_mlu_ops version; supported: {supported_text()}"
    problems = []
    if not _matches(tmo_version, SUPPORTED["torch_mlu_ops"]):
        problems.append(f"torch_mlu_ops {tmo_version}")
    if torch_mlu_version is not None and not _matches(torch_mlu_version, SUPPORTED["torch_mlu"]):
        problems.append(f"torch_mlu {torch_mlu_version}")
    if not _matches(torch_version, SUPPORTED["torch"]):
        problems.append(f"torch {torch_version}")
    if problems:
        return (
            f"unsupported {', '.join(problems)}: v4_ascend's MLU kernels are pinned to {supported_text()} "
            "(tmo signatures change between releases; see docs/cambricon.md)"
        )
    return None


def installed_version(name: str) -> str | None:
    """Version of ``name`` without importing it: ``__version__`` if loaded, else the installed metadata."""
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__version__", None):
        return str(loaded.__version__)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_problem() -> str | None:
    """Why the installed torch_mlu_ops / torch_mlu / torch cannot be used, or None."""
    torch_mlu = installed_version("torch_mlu") if "torch_mlu" in sys.modules else None
    return check_versions(installed_version(MODULE), torch_mlu, torch.__version__)


def _tmo():
    return importlib.import_module(MODULE)


@functools.cache
def _keyword(function, *candidates: str) -> str:
    """The parameter name the installed tmo ``function`` uses among ``candidates`` (cached per function)."""
    parameters = inspect.signature(function).parameters
    for name in candidates:
        if name in parameters:
            return name
    raise RuntimeError(
        f"torch_mlu_ops.{function.__name__} has none of the parameters {candidates} "
        f"(installed {installed_version(MODULE)}; supported: {supported_text()})"
    )


def group_gemm(a: torch.Tensor, b: torch.Tensor, m_list: torch.Tensor, max_m: int) -> torch.Tensor:
    """``out[rows of group g] = a[rows of group g] @ b[g].T``: rows of ``a`` contiguous per group.

    ``a [M, K]``, ``b [G, N, K]`` (Linear layout), ``m_list [G]`` int32 row counts, ``max_m`` an upper
    bound of any count. Returns ``[M, N]``; rows past ``sum(m_list)`` are not written by tmo.
    """
    return _tmo().group_gemm(
        a=a, b=b, m_list=m_list, expand_idx=None, c=None, alpha=None, beta=None, max_m=max_m
    )


def single_query_cached_kv_attn(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    out: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    max_context_len: int,
    softmax_scale: float,
    sink: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paged decode attention over one shared K=V cache, with an optional per-head sink; returns (out, lse).

    ``q [B, S, H, D]``; ``kv_cache [blocks, H_kv, block_size, D]`` holds keys and values (``v_cache``
    None, ``head_size_v = D``); ``block_tables [B, max_blocks]`` and ``context_lens [B]`` int32; ``out``
    ``[B, S, H, D]`` is written; ``sink [H]`` fp32 adds ``exp(sink)`` to each softmax denominator.
    ``lse [B, H, S]`` fp32 is the logsumexp of the scaled logits (tmo's documented math; the sink is not
    part of it). No window (``-1``), no quantisation, fp32 softmax.
    """
    function = _tmo().single_query_cached_kv_attn
    return function(
        q=q,
        k_cache=kv_cache,
        v_cache=None,
        out=out,
        block_tables=block_tables,
        context_lens=context_lens,
        k_cache_quant_scale=None,
        v_cache_quant_scale=None,
        alibi_slopes=None,
        max_context_len=max_context_len,
        windows_size_left=-1,
        windows_size_right=-1,
        softmax_scale=softmax_scale,
        return_lse=True,
        head_size_v=q.shape[-1],
        compute_dtype=torch.float32,
        **{_keyword(function, "learnable_sink", "sink"): sink},
    )


def moe_softplus_topk(
    logits: torch.Tensor,
    topk: int,
    token_ids: torch.Tensor | None,
    tid2eid: torch.Tensor | None,
    bias: torch.Tensor | None,
    route_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V4 routing: ``(weights [T, topk] fp32, expert ids [T, topk] int32)``.

    ``logits [T, E]`` fp32. Scores are ``sqrt(softplus(logits))``; without ``tid2eid`` the top ``topk``
    experts of ``scores + bias`` are picked (``bias [E]`` fp32, selection only), with it expert ids are
    ``tid2eid[token_ids]`` (``token_ids [T]``, ``tid2eid [V, topk]`` int32); weights are the picked scores
    renormalised and multiplied by ``route_scale``. Called by keyword: the argument order differs between
    tmo copies (``topk`` second in the Python wrapper, after the optional tensors in the schema).
    """
    return _tmo().moe_softplus_topk(
        input=logits, topk=topk, input_ids=token_ids, tid2eid=tid2eid, bias=bias, route_scale=route_scale
    )


def hc_split_sinkhorn(
    mixes: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor, hc_mult: int, sinkhorn_iter: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mHC split + Sinkhorn: ``(pre [T, n], post [T, n], comb [T, n, n])``, all fp32.

    ``mixes [T, (2 + n) * n]`` fp32 (the normalised mixes GEMM), ``hc_scale [3]``, ``hc_base [(2 + n) * n]``
    fp32: ``pre = sigmoid(mixes[:, :n] * hc_scale[0] + hc_base[:n]) + eps``, ``post = 2 * sigmoid(...)`` of
    the next ``n``, ``comb`` the Sinkhorn projection of the last ``n * n`` (``sinkhorn_iter`` iterations,
    ``eps``). ``pre_scale`` is not used (None).
    """
    return _tmo().hc_split_sinkhorn(
        mixes=mixes, hc_scale=hc_scale, hc_base=hc_base, pre_scale=None, hc_mult=hc_mult,
        sinkhorn_iter=sinkhorn_iter, eps=eps,
    )


def fused_mhc_post(
    x: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor
) -> torch.Tensor:
    """mHC post: ``out[:, j] = post[:, j, None] * x + sum_i comb[:, i, j, None] * residual[:, i]``.

    ``x [N, D]`` the sublayer output, ``residual [N, HC, D]`` the streams (same dtype), ``post [N, HC]`` and
    ``comb [N, HC, HC]`` fp32; returns ``[N, HC, D]`` in the streams' dtype. Built for D = 4096, HC = 4.
    The optional RMS output is not requested (``compute_rms=False``).
    """
    out, _ = _tmo().fused_mhc_post(x=x, residual=residual, post=post, comb=comb, compute_rms=False, eps=1e-6)
    return out
