"""C++ mhc_post vs the reference and an explicit per-stream fp64 loop (per-dtype tolerances: the kernel
sums the streams in its own order and may fuse multiply-adds, so results agree to rounding, not bit for bit)."""

from __future__ import annotations

import pytest
import torch

from v4_ascend.reference import mhc as ref
from v4_ascend.testing.tolerance import assert_close


def inputs(T, n, D, dtype=torch.float32, post_dtype=torch.float32):
    f = torch.randn(T, D, dtype=torch.float64).to(dtype)
    x = torch.randn(T, n, D, dtype=torch.float64).to(dtype)
    post = (2 * torch.rand(T, n, dtype=torch.float64)).to(post_dtype)
    comb = torch.softmax(torch.randn(T, n, n, dtype=torch.float64), dim=-1).to(post_dtype)
    return f, x, post, comb


def post_mix(served_by_cpp, *args):
    with served_by_cpp("mhc_post"):
        return torch.ops.v4_ascend.mhc_post(*args)


def stream_loop(f, x, post, comb):
    """out[t, j] = post[t, j] f[t] + sum_i comb[t, i, j] x[t, i], one stream at a time in fp64."""
    f, x, post, comb = f.double(), x.double(), post.double(), comb.double()
    out = torch.empty_like(x)
    for j in range(x.shape[1]):
        out[:, j] = post[:, j, None] * f + sum(comb[:, i, j, None] * x[:, i] for i in range(x.shape[1]))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("T", "n", "D"), [(1, 4, 4096), (5, 4, 300), (3, 1, 7), (2, 3, 513)])
def test_matches_reference_and_stream_loop(served_by_cpp, dtype, T, n, D):
    args = inputs(T, n, D, dtype)
    got = post_mix(served_by_cpp, *args)
    assert got.dtype == dtype and got.shape == (T, n, D)
    assert_close(got, ref.mhc_post(*args), dtype)
    assert_close(got, stream_loop(*args).to(dtype), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_vs_fp32_reference_on_same_values(served_by_cpp, dtype):
    f, x, post, comb = inputs(6, 4, 256, dtype)
    got = post_mix(served_by_cpp, f, x, post, comb)
    assert_close(got, ref.mhc_post(f.float(), x.float(), post, comb), dtype)


def test_fp64_weights_with_fp32_streams(served_by_cpp):
    args = inputs(4, 4, 64, torch.float32, post_dtype=torch.float64)
    assert_close(post_mix(served_by_cpp, *args), ref.mhc_post(*args), torch.float32)


def test_non_contiguous_inputs_and_no_tokens(served_by_cpp):
    f, x, post, comb = inputs(5, 4, 32)
    x_strided = x.transpose(0, 1).contiguous().transpose(0, 1)
    comb_t = comb.transpose(1, 2).contiguous().transpose(1, 2)
    f_strided = torch.stack([f, f], dim=-1)[..., 0]
    assert not (x_strided.is_contiguous() or comb_t.is_contiguous() or f_strided.is_contiguous())
    assert_close(post_mix(served_by_cpp, f_strided, x_strided, post.t().contiguous().t(), comb_t),
                 ref.mhc_post(f, x, post, comb), torch.float32)
    empty = inputs(0, 4, 32)
    assert post_mix(served_by_cpp, *empty).shape == (0, 4, 32)


@pytest.mark.parametrize(("index", "value", "arg"), [
    (0, torch.zeros(3, 16, dtype=torch.float64), "f"),
    (0, torch.zeros(3, 8), "f"),
    (2, torch.zeros(3, 2), "post"),
    (3, torch.zeros(3, 4, 2), "comb"),
    (3, torch.zeros(3, 4, 4, dtype=torch.int32), "comb"),
    (1, torch.zeros(3, 16), "x"),
])
def test_bad_arguments_name_the_argument(served_by_cpp, index, value, arg):
    args = list(inputs(3, 4, 16))
    args[index] = value
    with served_by_cpp("mhc_post", calls=0), pytest.raises(ValueError, match=f"mhc_post: '{arg}'"):
        torch.ops.v4_ascend.mhc_post(*args)
