"""The C++ CPU kernels of fp8_quant, fp4_quant, fp8_fake_quant, fp4_fake_quant and hadamard_rotate
(csrc/cpu/quant.cpp) are bit-exact with the pure-PyTorch references: outputs (codes, scales, values) are
compared as raw bits, on the registered cases of every dtype, on sweeps of every e4m3 code and e2m1 tie
across exponents, at the amax floors, on signed zeros, NaN/inf and non-contiguous inputs. Independent
oracles (torch's own e4m3 cast, a hand-written e2m1 table, a dense Sylvester-Hadamard matmul in fp64)
check the rules themselves. Every kernel call also checks that the C++ kernel, not the reference, served it.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from v4_ascend import backends
from v4_ascend.reference import quant as ref
from v4_ascend.testing import cases

OPS = ("fp8_quant", "fp4_quant", "fp8_fake_quant", "fp4_fake_quant", "hadamard_rotate")
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
REFERENCE = {"fp8_quant": ref.fp8_quant, "fp4_quant": ref.fp4_quant, "fp8_fake_quant": ref.fp8_fake_quant,
             "fp4_fake_quant": ref.fp4_fake_quant, "hadamard_rotate": ref.hadamard_rotate}
_INT_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _extension():
    if "cpu" not in backends.loaded():
        return None
    extension = backends.module("cpu").extension()
    return extension if set(OPS) <= set(extension.kernel_info()) else None


pytestmark = pytest.mark.skipif(
    _extension() is None, reason="v4_ascend._C with the quant kernels is not loaded in this process (not built, "
    "or V4_ASCEND_BACKEND excludes cpu)"
)


def kernel(op: str, *args):
    """``op`` through the dispatcher, asserting that its C++ kernel served the call."""
    before = _extension().kernel_calls()[op]
    out = getattr(torch.ops.v4_ascend, op).default(*args)
    assert _extension().kernel_calls()[op] == before + 1, f"{op} was not served by the C++ kernel"
    return out


def assert_bits(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same dtype, shape and bits; NaNs only need to sit at the same places (their payloads may differ)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.is_contiguous()
    if want.element_size() == 1:  # e4m3 / packed e2m1 codes
        assert torch.equal(got.view(torch.uint8), want.view(torch.uint8)), "codes differ"
        return
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan), "NaNs at different places"
    as_int = _INT_OF_WIDTH[want.element_size()]
    got_bits, want_bits = got.view(as_int)[~nan], want.view(as_int)[~nan]
    mismatch = (got_bits != want_bits).nonzero()
    assert mismatch.numel() == 0, (
        f"{mismatch.numel()} values differ, first: got {got[~nan][mismatch[0]].item()!r} "
        f"want {want[~nan][mismatch[0]].item()!r}"
    )


def check(op: str, *args):
    out, want = kernel(op, *args), REFERENCE[op](*args)
    for got_part, want_part in zip(*((out, want) if isinstance(out, tuple) else ((out,), (want,))), strict=True):
        assert_bits(got_part, want_part)
    return out


# ---- registered cases ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_registered_cases_bit_exact(op, dtype, seed):
    for case in cases.generate(op, "cpu", dtype, seed=seed):
        check(op, *case.args)


# ---- FP8 e4m3 --------------------------------------------------------------------------------------

def _e4m3_values() -> torch.Tensor:
    """Every finite e4m3 value, every midpoint between neighbours (ties) and the floats either side of it."""
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).float()
    finite = codes[~codes.isnan()]
    positive = finite[finite > 0].unique()
    mids = (positive[1:] + positive[:-1]) / 2
    mids = torch.cat([mids, positive[:1] / 2])  # the tie between 0 and the smallest subnormal
    around = torch.cat([mids, mids.nextafter(torch.tensor(0.0)), mids.nextafter(torch.tensor(math.inf))])
    return torch.cat([finite, around, -around])


@pytest.mark.parametrize("exponent", [-22, -9, 0, 7, 60, 118])
def test_fp8_every_code_tie_and_neighbour_across_exponents(exponent):
    values = _e4m3_values()
    block = 64
    rows = -(-values.numel() // (block - 1))
    x = torch.zeros(rows, block - 1)
    x.view(-1)[: values.numel()] = values
    anchor = torch.full((rows, 1), 448.0)  # amax 448 -> scale 1 before the shift (above the 1e-4 floor)
    x = torch.cat([anchor, x], dim=1) * 2.0**exponent
    out = check("fp8_fake_quant", x, block)
    # Independent of the reference: scale 2^exponent, and torch's own fp32 -> e4m3 cast (RNE, -0 kept).
    codes = (x / 2.0**exponent).to(torch.float8_e4m3fn)
    assert_bits(out, codes.float() * 2.0**exponent)
    q, scale = check("fp8_quant", x, block)
    assert_bits(q, codes)
    assert torch.equal(scale, torch.full((rows, 1), 2.0**exponent))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fp8_amax_floor_zeros_and_subnormal_results(dtype):
    x = torch.tensor([
        [0.0, -0.0] * 64,  # all zeros: amax floored to 1e-4, zeros keep their sign
        [1e-7, -3e-6] * 64,  # below the floor: scale 2^-22, values round into e4m3 subnormals
        [1e-4, -2.0**-30] * 64,  # exactly at the floor
        [448.0 * 2**-8, 2.0**-18] * 64,  # a tiny value next to the block max: an e4m3 subnormal code
    ], dtype=torch.float64).to(dtype)
    out = check("fp8_fake_quant", x, 128)
    check("fp8_quant", x, 128)
    assert torch.signbit(out[0, 1::2]).all() and not torch.signbit(out[0, ::2]).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["fp8_quant", "fp8_fake_quant"])
def test_fp8_non_contiguous_input(op, dtype):
    base = torch.randn(256, 6, dtype=torch.float64).to(dtype)
    check(op, base.t(), 64)  # [6, 256] with strides (1, 6)
    check(op, torch.randn(3, 512, dtype=torch.float64).to(dtype)[:, ::2], 128)


# ---- FP4 e2m1 --------------------------------------------------------------------------------------

# (input at scale 1, expected e2m1 value): ties go to the even code, zeros keep their sign.
_E2M1_ROUNDING = [
    (0.0, 0.0), (-0.0, -0.0), (0.25, 0.0), (-0.25, -0.0), (0.2500001, 0.5), (0.5, 0.5), (0.75, 1.0), (0.7499999, 0.5),
    (1.25, 1.0), (1.2500001, 1.5), (1.75, 2.0), (1.7499999, 1.5), (2.5, 2.0), (2.5000002, 3.0), (3.5, 4.0),
    (3.4999998, 3.0), (5.0, 4.0), (5.0000005, 6.0), (6.0, 6.0), (-1.75, -2.0), (-5.0, -4.0), (-3.5, -4.0),
    (1e-30, 0.0), (-1e-30, -0.0),
]


@pytest.mark.parametrize("exponent", [-100, -40, 0, 40, 120])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fp4_ties_and_signed_zeros_against_e2m1_table(exponent, dtype):
    inputs = torch.tensor([v for v, _ in _E2M1_ROUNDING], dtype=torch.float32)
    expected = torch.tensor([e for _, e in _E2M1_ROUNDING], dtype=torch.float32)
    # 8-value blocks: [6 (amax -> scale 1), v, v, v, v, v, v, v] shifted by 2^exponent.
    x = torch.cat([torch.full((inputs.numel(), 1), 6.0), inputs[:, None].expand(-1, 7)], dim=1) * 2.0**exponent
    out = check("fp4_fake_quant", x.to(dtype), 8)
    check("fp4_quant", x.to(dtype), 8)
    want = (torch.cat([torch.full((inputs.numel(), 1), 6.0), expected[:, None].expand(-1, 7)], dim=1)
            * 2.0**exponent).to(dtype)
    assert_bits(out, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fp4_amax_floor_and_clamp(dtype):
    x = torch.tensor([
        [0.0, -0.0] * 16,  # all zeros: amax floored to 6 * 2^-126, scale 2^-126
        [1e-39, -2e-40] * 16,  # fp32 subnormals below the floor
        [7.0, 6.5] * 16,  # amax 7 -> scale 2: 3.25 and 3.5 round to 3 and 4
        [100.0, -1.0] * 16,
    ], dtype=torch.float64).to(dtype)
    out = check("fp4_fake_quant", x, 32)
    check("fp4_quant", x, 32)
    assert torch.signbit(out[0, 1::2]).all() and not torch.signbit(out[0, ::2]).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["fp4_quant", "fp4_fake_quant"])
def test_fp4_non_contiguous_input(op, dtype):
    check(op, torch.randn(64, 5, dtype=torch.float64).to(dtype).t(), 16)
    check(op, torch.randn(2, 3, 128, dtype=torch.float64).to(dtype)[:, :, ::2], 32)


@pytest.mark.parametrize("op", ["fp8_quant", "fp4_quant", "fp8_fake_quant", "fp4_fake_quant"])
def test_nan_and_inf_follow_the_reference(op):
    x = torch.randn(4, 64)
    x[0, 3] = math.nan
    x[1, 5] = math.inf
    x[2, 7] = -math.inf
    x[3, 0] = 3e38  # scale overflows to inf for fp4's /6
    check(op, x, 32)


@settings(max_examples=25, deadline=None)
@given(
    op=st.sampled_from(["fp8_quant", "fp4_quant", "fp8_fake_quant", "fp4_fake_quant"]),
    dtype=st.sampled_from(DTYPES),
    rows=st.integers(0, 5),
    blocks=st.integers(1, 4),
    block=st.sampled_from([2, 16, 32, 64, 128]),
    exponent=st.integers(-130, 120),
)
def test_random_shapes_and_magnitudes_bit_exact(op, dtype, rows, blocks, block, exponent):
    x = (torch.randn(rows, blocks * block, dtype=torch.float64) * 2.0**exponent).to(dtype)
    check(op, x, block)


# ---- Hadamard rotation -----------------------------------------------------------------------------

def _sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 4, 8, 32, 128, 512, 4096])
def test_hadamard_bit_exact_and_equal_to_dense_matrix(dtype, n):
    x = torch.randn(3, n, dtype=torch.float64).to(dtype)
    out = check("hadamard_rotate", x)
    dense = x.double() @ _sylvester(n) / math.sqrt(n)  # H is symmetric
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(out.double(), dense, atol=tol * math.sqrt(n), rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hadamard_non_contiguous_and_rows_independent(dtype):
    x = torch.randn(64, 4, 2, dtype=torch.float64).to(dtype).permute(2, 1, 0)  # [2, 4, 64], last dim strided
    out = check("hadamard_rotate", x)
    assert_bits(kernel("hadamard_rotate", x[:, 1:2].contiguous()), out[:, 1:2].contiguous())


def test_hadamard_gradient_through_the_kernel():
    x = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    out = kernel("hadamard_rotate", x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, (_sylvester(16).sum(1) / 4).expand(3, 16))


# ---- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("op", "args", "match"), [
    ("fp8_fake_quant", (torch.ones(4, 128, dtype=torch.int32), 128), "'x' must be float32"),
    ("fp8_fake_quant", (torch.ones(4, 128), 0), "'block' must be a positive int, got 0"),
    ("fp8_fake_quant", (torch.ones(4, 100), 128), r"'x' must be \[..., K\] with K a multiple of block=128, "
                                                  r"got shape \(4, 100\)"),
    ("fp8_fake_quant", (torch.tensor(1.0), 1), r"got shape \(\)"),
    ("fp4_fake_quant", (torch.ones(4, 96), 3), "'block' must be a positive even int, got 3"),
    ("fp4_fake_quant", (torch.ones(40), 32), r"got shape \(40,\)"),
    ("fp8_quant", (torch.ones(4, 100), 64), r"K a multiple of block=64, got shape \(4, 100\)"),
    ("fp4_quant", (torch.ones(4, 96), 3), "'block' must be a positive even int, got 3"),
    ("hadamard_rotate", (torch.ones(4, 96),), r"'x' must be \[..., n\] with n a power of two, "
                                              r"got shape \(4, 96\)"),
    ("hadamard_rotate", (torch.ones(4, 8, dtype=torch.int64),), "'x' must be float32"),
])
def test_errors_name_the_argument_like_the_reference(op, args, match):
    """Same message as the reference (which names fp8_quant / fp4_quant for the fake quantisers); the
    kernel names the op that was called."""
    with pytest.raises(ValueError, match=match):
        REFERENCE[op](*args)
    with pytest.raises(ValueError, match=f"^{op}: .*{match}"):
        getattr(torch.ops.v4_ascend, op).default(*args)


def test_empty_inputs():
    for op, args in [("fp8_fake_quant", (torch.ones(0, 128), 128)), ("fp4_fake_quant", (torch.ones(3, 0), 32)),
                     ("fp8_quant", (torch.ones(2, 0, 128), 128)), ("fp4_quant", (torch.ones(3, 0), 32)),
                     ("hadamard_rotate", (torch.ones(0, 4, 8),))]:
        check(op, *args)
