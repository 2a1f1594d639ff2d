"""Bad input raises an error naming the argument, in the reference and in the CPU kernels alike."""

from __future__ import annotations

import pytest
import torch

from v4_ascend import library

I32 = torch.int32


def sparse_attn_args(**change):
    args = dict(
        q=torch.randn(2, 4, 8),
        kv=torch.randn(5, 8),
        idx=torch.tensor([[0, 4], [-1, 1]], dtype=I32),
        sink=torch.randn(4),
        scale=0.35,
    )
    args.update(change)
    return args


def grouped_gemm_args(**change):
    args = dict(x=torch.randn(6, 8), w=torch.randn(3, 5, 8), offsets=torch.tensor([2, 2, 6], dtype=I32))
    args.update(change)
    return args


BAD_INPUTS = [
    ("sparse_attn", sparse_attn_args(q=torch.randn(2, 32)), "'q'"),
    ("sparse_attn", sparse_attn_args(kv=torch.randn(5, 7)), "'kv'"),
    ("sparse_attn", sparse_attn_args(kv=torch.randn(5, 8, dtype=torch.float64)), "'kv'"),
    ("sparse_attn", sparse_attn_args(idx=torch.tensor([[0, 4], [-1, 1]])), "'idx'"),
    ("sparse_attn", sparse_attn_args(idx=torch.tensor([[0, 5], [-1, 1]], dtype=I32)), "'idx'"),
    ("sparse_attn", sparse_attn_args(idx=torch.tensor([[0, -2], [-1, 1]], dtype=I32)), "'idx'"),
    ("sparse_attn", sparse_attn_args(sink=torch.randn(3)), "'sink'"),
    ("sparse_attn", sparse_attn_args(extra_kv=torch.randn(3, 8)), "'extra_idx'"),
    ("sparse_attn", sparse_attn_args(topk_length=torch.tensor([3, 1], dtype=I32)), "'topk_length'"),
    ("grouped_gemm", grouped_gemm_args(x=torch.randn(6, 8, 1)), "'x'"),
    ("grouped_gemm", grouped_gemm_args(w=torch.randn(3, 5, 9)), "'w'"),
    ("grouped_gemm", grouped_gemm_args(offsets=torch.tensor([2, 2, 6])), "'offsets'"),
    ("grouped_gemm", grouped_gemm_args(offsets=torch.tensor([2, 1, 6], dtype=I32)), "'offsets'"),
    ("grouped_gemm", grouped_gemm_args(offsets=torch.tensor([2, 2, 7], dtype=I32)), "'offsets'"),
    ("grouped_gemm_masked", dict(x=torch.randn(2, 3, 4), w=torch.randn(2, 5, 4),
                                 counts=torch.tensor([1, 4], dtype=I32)), "'counts'"),
]


@pytest.mark.parametrize("op,kwargs,argument", BAD_INPUTS, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("path", ["dispatcher", "reference"])
def test_bad_input_names_the_argument(op, kwargs, argument, path):
    spec = library.ops()[op]
    call = spec.overload if path == "dispatcher" else spec.reference
    with pytest.raises((ValueError, RuntimeError), match=argument):
        call(**kwargs)


def test_mixed_devices_name_the_argument():
    args = sparse_attn_args(kv=torch.randn(5, 8, device="meta"))
    with pytest.raises((ValueError, RuntimeError), match="'kv'"):
        library.ops()["sparse_attn"].overload(**args)
