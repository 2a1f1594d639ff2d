"""The C++ CPU kernel of sparse_attn against the reference (and, in fp64, a dense masked softmax).

Low-precision kernels are compared with the fp32 reference on the same (already rounded) inputs.
Shapes are chosen to cross every path of the kernel: head dims that are multiples of 32 (AVX-512 or
AVX2 kernels; tests/cpu/test_cpu_isa_override.py reruns this file under each lower ISA) and others
(portable kernel), head counts that are not multiples of the vector of heads (16 lanes AVX-512, 8 AVX2)
or of the logits tile's 4 head vectors, row counts that are not multiples of the 128-row block or of the
logits tile's rows, odd row counts (bf16 pairs).
Non-contiguous inputs are made contiguous by the kernel (documented in csrc/cpu/sparse_attn.cpp).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from v4_ascend.backends import cpu
from v4_ascend.reference.attention import sparse_attn as reference
from v4_ascend.testing import cases, tolerance

pytestmark = pytest.mark.skipif(cpu.unavailable_reason() is not None, reason="v4_ascend._C is not built")

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
kernel = torch.ops.v4_ascend.sparse_attn.default


def calls() -> int:
    return cpu.extension().kernel_calls()["sparse_attn"]


def check(dtype, q, kv, idx, sink, scale, **kwargs):
    """Runs the kernel (asserting that the C++ kernel served it) and compares it with the reference."""
    before = calls()
    out, lse = kernel(q, kv, idx, sink, scale, **kwargs)
    assert calls() == before + 1, "the C++ kernel did not serve the call"
    want_out, want_lse = reference(*tolerance.upcast((q, kv, idx, sink, scale)), **tolerance.upcast(kwargs))
    assert out.dtype == q.dtype and out.shape == q.shape
    assert lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tolerance.assert_close(out, want_out, dtype, "out")
    tolerance.assert_close(lse, want_lse, dtype if dtype == torch.float64 else torch.float32, "lse")
    return out, lse


def random_inputs(T, H, D, N, K, dtype, *, holes=0.25, N2=0, K2=0, lengths=False, logit_scale=1.0):
    q = torch.randn(T, H, D, dtype=torch.float64).mul(logit_scale).to(dtype)
    kv = torch.randn(N, D, dtype=torch.float64).to(dtype)
    idx = torch.randint(0, max(N, 1), (T, K), dtype=torch.int32)
    idx = idx.masked_fill((torch.rand(T, K) < holes) | (N == 0), -1)
    kwargs = {}
    if N2:
        kwargs["extra_kv"] = torch.randn(N2, D, dtype=torch.float64).to(dtype)
        kwargs["extra_idx"] = torch.randint(-1, N2, (T, K2), dtype=torch.int32)
    if lengths:
        kwargs["topk_length"] = torch.randint(0, K + 1, (T,), dtype=torch.int32)
        if N2:
            kwargs["extra_topk_length"] = torch.randint(0, K2 + 1, (T,), dtype=torch.int32)
    return q, kv, idx, torch.randn(H), D**-0.5, kwargs


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_registered_cases(dtype):
    for case in cases.generate("sparse_attn", "cpu", dtype, seed=int(torch.randint(0, 2**31, ()))):
        check(dtype, *case.args, **case.kwargs)


# (T, H, D, N, K): block tails (blocks of 128 rows), padded head vectors and logits tiles of fewer head
# vectors, head tails of the 4-head PV tiles, column tails of the PV tiles (6 vectors AVX-512, 3 AVX2),
# odd row counts (bf16 pairs), head dims of the portable kernel.
SHAPES = [
    (1, 64, 512, 8192, 640),  # V4-Flash decode: one token, 64 heads, window + top-k
    (3, 5, 64, 100, 180),     # 5 heads (tile of 4 + 1), ~135 valid rows (a block + a tail, odd or even)
    (2, 7, 96, 50, 31),       # 6 vectors per row (one full PV tile), 31 rows
    (2, 8, 160, 40, 65),      # 10 vectors (a full tile + two tails of 2)
    (2, 40, 64, 60, 70),      # 40 heads: 3 vectors of 16 (AVX2: 6 of 8), a 4-vector logits tile + tails
    (2, 4, 32, 20, 1),        # a single row
    (2, 3, 40, 9, 6),         # head dim 40: portable kernel
    (2, 2, 16, 5, 3),]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_shapes_with_holes(dtype, shape):
    T, H, D, N, K = shape
    q, kv, idx, sink, scale, kwargs = random_inputs(T, H, D, N, K, dtype)
    idx[0, 0] = N - 1  # the last entry of the pool
    check(dtype, q, kv, idx, sink, scale, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", [64, 40])
def test_two_scopes_and_lengths(dtype, D):
    q, kv, idx, sink, scale, kwargs = random_inputs(5, 6, D, 70, 48, dtype, N2=30, K2=21, lengths=True)
    kwargs["topk_length"][0], kwargs["extra_topk_length"][0] = 0, 0  # a token with no entry at all
    kwargs["topk_length"][1], kwargs["extra_topk_length"][1] = 48, 21
    out, lse = check(dtype, q, kv, idx, sink, scale, **kwargs)
    assert (out[0] == 0).all() and (lse[0] == float("-inf")).all()


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_growing_maximum_and_dominant_sink(dtype):
    # Large logits make the running maximum jump between blocks (rescaling the accumulator); a sink
    # 30 above the largest logit shrinks the output by ~1e-13 without losing it.
    q, kv, idx, _, scale, _ = random_inputs(2, 8, 128, 300, 200, dtype, holes=0.0, logit_scale=8.0)
    check(dtype, q, kv, idx, torch.randn(8) * 5, scale)
    check(dtype, q, kv, idx, torch.full((8,), 30.0) + lse_bound(q, kv, scale), scale)


def lse_bound(q, kv, scale) -> float:
    return float((q.double().flatten(0, 1) @ kv.double().T).max() * scale)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_sink_far_above_every_logit_gives_finite_lse(dtype):
    # exp(sink - logit) overflows fp32 here: the kernel must factor it out (the output is ~0 and
    # lse, which excludes the sink, stays the logsumexp of the logits).
    q, kv, idx, _, scale, _ = random_inputs(2, 8, 64, 50, 40, dtype, holes=0.0)
    out, lse = kernel(q, kv, idx, torch.full((8,), 500.0), scale)
    _, want_lse = kernel(q, kv, idx, None, scale)
    assert torch.isfinite(out).all() and out.abs().max() < 1e-30
    torch.testing.assert_close(lse, want_lse, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_empty_rows_and_no_sink(dtype):
    q, kv, idx, _, scale, _ = random_inputs(4, 4, 64, 10, 40, dtype)
    idx[1] = -1
    out, lse = check(dtype, q, kv, idx, None, scale)
    assert (out[1] == 0).all() and (lse[1] == float("-inf")).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pool, width", [(0, 3), (10, 0)], ids=["empty-pool", "no-slots"])
def test_nothing_to_attend(dtype, pool, width):
    # Every token is an empty row: out = 0, lse = -inf (checked directly: the reference needs N, K > 0).
    q = torch.randn(3, 4, 64).to(dtype)
    idx = torch.full((3, width), -1, dtype=torch.int32)
    out, lse = kernel(q, torch.randn(pool, 64).to(dtype), idx, torch.randn(4), 0.125)
    assert (out == 0).all() and (lse == float("-inf")).all()


@pytest.mark.parametrize("tokens, heads", [(0, 4), (2, 0)])
def test_no_tokens_or_no_heads(tokens, heads):
    out, lse = kernel(torch.randn(tokens, heads, 64), torch.randn(5, 64), torch.zeros(tokens, 3, dtype=torch.int32),
                      None, 0.125)
    assert out.shape == (tokens, heads, 64) and lse.shape == (tokens, heads)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_non_contiguous_inputs_are_made_contiguous(dtype):
    q, kv, idx, sink, scale, _ = random_inputs(3, 4, 64, 50, 40, dtype)
    q_strided = q.transpose(0, 1).contiguous().transpose(0, 1)
    kv_strided = torch.stack([kv, kv], dim=-1)[..., 0]
    idx_strided = idx.t().contiguous().t()
    sink_strided = torch.stack([sink, sink], dim=1)[:, 0]
    assert not any(x.is_contiguous() for x in (q_strided, kv_strided, idx_strided, sink_strided))
    out, lse = check(dtype, q_strided, kv_strided, idx_strided, sink_strided, scale)
    want_out, want_lse = kernel(q, kv, idx, sink, scale)
    torch.testing.assert_close(out, want_out, atol=0, rtol=0)
    torch.testing.assert_close(lse, want_lse, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_threads_split_heads_identically(dtype):
    # One token and two threads: the heads are split across threads; results must not change.
    q, kv, idx, sink, scale, _ = random_inputs(1, 64, 128, 500, 100, dtype)
    one = kernel(q, kv, idx, sink, scale)
    torch.set_num_threads(2)
    try:
        two = kernel(q, kv, idx, sink, scale)
    finally:
        torch.set_num_threads(1)
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_fp64_matches_dense_masked_softmax():
    # An independent formulation: a dense [T, H, N] softmax with masked columns and the sink column.
    T, H, D, N, K = 3, 4, 64, 37, 50
    q, kv, idx, sink, scale, _ = random_inputs(T, H, D, N, K, torch.float64)
    out, lse = kernel(q, kv, idx, sink.double(), scale)
    counts = torch.zeros(T, N, dtype=torch.float64)
    for t in range(T):
        for j in idx[t].tolist():
            if j >= 0:
                counts[t, j] += 1  # a duplicated index counts twice, like in the gathered softmax
    logits = torch.einsum("thd,nd->thn", q, kv) * scale
    weights = counts[:, None, :] * torch.exp(logits)
    total = weights.sum(-1)
    want = torch.einsum("thn,nd->thd", weights, kv) / (total + torch.exp(sink.double()))[..., None]
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(lse, torch.log(total), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("bad", [-2, 50])
def test_out_of_range_index_names_the_argument(bad):
    q, kv, idx, sink, scale, _ = random_inputs(2, 4, 64, 50, 8, torch.float32, holes=0.0)
    bad_idx = idx.clone()
    bad_idx[1, 3] = bad
    with pytest.raises(ValueError, match="'idx'"):
        kernel(q, kv, bad_idx, sink, scale)
    extra = torch.randn(7, 64)
    extra_idx = torch.randint(0, 7, (2, 4), dtype=torch.int32)
    extra_idx[0, 2] = 7 if bad > 0 else bad
    with pytest.raises(ValueError, match="'extra_idx'"):
        kernel(q, kv, idx, sink, scale, extra, extra_idx)


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(1, 3),
    H=st.integers(1, 9),
    D=st.sampled_from([16, 32, 48, 64, 96]),
    K=st.integers(1, 300),
    N=st.integers(1, 80),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    holes=st.floats(0.0, 1.0),
)
def test_property_random_shapes(T, H, D, K, N, dtype, holes):
    q, kv, idx, sink, scale, _ = random_inputs(T, H, D, N, K, dtype, holes=holes)
    check(dtype, q, kv, idx, sink, scale)


@pytest.mark.parametrize("D", [64, 40])
def test_bf16_without_bf16_products_is_the_fp32_kernel_rounded_to_nearest_even(D):
    # Without AVX512-BF16 products (AVX2 and portable kernels; head dim 40: portable on every ISA), bf16
    # elements are widened exactly to fp32 and go through the fp32 kernel's very operations: the output is
    # the fp32 kernel's on the widened inputs, rounded to nearest even (torch's conversion), and lse equal.
    if D % 32 == 0 and cpu.extension().cpu_isa() == "avx512":
        pytest.skip("the AVX-512 bf16 kernel multiplies bf16 pairs (vdpbf16ps): rounding differs")
    q, kv, idx, sink, scale, kwargs = random_inputs(3, 20, D, 90, 150, torch.bfloat16, N2=40, K2=30)
    out, lse = kernel(q, kv, idx, sink, scale, **kwargs)
    widened = {name: value.float() if value.is_floating_point() else value for name, value in kwargs.items()}
    want_out, want_lse = kernel(q.float(), kv.float(), idx, sink, scale, **widened)
    torch.testing.assert_close(out, want_out.to(torch.bfloat16), atol=0, rtol=0)
    torch.testing.assert_close(lse, want_lse, atol=0, rtol=0)


def test_reports_the_chosen_isa(capsys):
    # Run under V4_ASCEND_CPU_ISA by tests/cpu/test_cpu_isa_override.py, which reads this line back.
    chosen = cpu.extension().cpu_isa()
    assert chosen == (os.environ.get("V4_ASCEND_CPU_ISA") or cpu.extension().cpu_isa_detected())
    with capsys.disabled():
        print(f"cpu_isa={chosen}")
