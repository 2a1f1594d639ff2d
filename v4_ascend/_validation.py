"""Argument checks shared by reference and fake kernels.

Every message names the op, the argument, what was expected and what was given, so that a user sees
``sparse_attn: 'idx' must be int32, got torch.int64`` rather than an indexing error deep inside a kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def fail(op: str, arg: str, expected: str, got: object) -> None:
    raise ValueError(f"{op}: '{arg}' must be {expected}, got {got}")


def tensor(
    op: str,
    arg: str,
    x: object,
    *,
    rank: int | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    shape: Sequence[int | None] | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Check one tensor argument; ``None`` entries of ``shape`` match any size."""
    if not isinstance(x, torch.Tensor):
        fail(op, arg, "a Tensor", type(x).__name__)
    if rank is not None and x.dim() != rank:
        fail(op, arg, f"{rank}-D", f"shape {tuple(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        fail(op, arg, names, x.dtype)
    if shape is not None:
        if x.dim() != len(shape) or any(
            want is not None and have != want for have, want in zip(x.shape, shape)
        ):
            want = tuple("*" if s is None else s for s in shape)
            fail(op, arg, f"of shape {want}", f"{tuple(x.shape)}")
    if device is not None and x.device != device:
        fail(op, arg, f"on {device} like the other inputs", x.device)
    return x


def same_dtype(op: str, arg: str, x: torch.Tensor, like: torch.Tensor, like_arg: str) -> None:
    if x.dtype != like.dtype:
        fail(op, arg, f"{like.dtype} like '{like_arg}'", x.dtype)


def index_range(op: str, arg: str, idx: torch.Tensor, upper: int, *, allow_invalid: bool) -> None:
    """Data check for index tensors: values in [0, upper), or -1 where ``allow_invalid``."""
    if idx.numel() == 0:
        return
    lo, hi = int(idx.min()), int(idx.max())
    low_ok = -1 if allow_invalid else 0
    if lo < low_ok or hi >= upper:
        allowed = f"in [{low_ok}, {upper})" if upper > 0 else "-1 (the pool is empty)"
        bad = lo if lo < low_ok else hi
        raise ValueError(f"{op}: '{arg}' values must be {allowed}, found {bad}")
