"""The C++ CPU kernel of ``moe_ffn`` (csrc/cpu/moe_ffn.cpp) against the pure-PyTorch reference.

Low-precision runs are compared with the fp32 reference on the same (already rounded) inputs, at the
per-case tolerances that v4_ascend/testing/cases/moe.py declares. Every test also checks that the C++
kernel, not the reference, served the call.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from v4_ascend import backends
from v4_ascend.reference import moe as ref
from v4_ascend.reference import quant
from v4_ascend.testing import cases
from v4_ascend.testing.tolerance import assert_close, upcast


def _extension():
    if "cpu" not in backends.loaded():
        return None
    extension = backends.module("cpu").extension()
    return extension if "moe_ffn" in extension.kernel_info() else None


pytestmark = pytest.mark.skipif(
    _extension() is None, reason="v4_ascend._C with a moe_ffn kernel is not loaded in this process (not built, "
    "or V4_ASCEND_BACKEND excludes cpu)"
)

OP = torch.ops.v4_ascend.moe_ffn.default


def kernel(*args, **kwargs):
    """moe_ffn through the dispatcher, asserting that the C++ kernel served it."""
    before = _extension().kernel_calls()["moe_ffn"]
    out = OP(*args, **kwargs)
    assert _extension().kernel_calls()["moe_ffn"] == before + 1, "the C++ kernel did not serve moe_ffn"
    return out


def check_against_reference(args, kwargs, dtype, tolerance=None):
    out = kernel(*args, **kwargs)
    expected = ref.moe_ffn(*upcast(args), **upcast(kwargs))
    assert out.dtype == args[0].dtype and out.shape == args[0].shape
    assert_close(out, expected, dtype, tolerance=tolerance or cases.tolerance_for("moe_ffn", dtype))
    return out


def _all_cases():
    dtypes = cases.case_sets()["moe_ffn"].dtypes + (torch.float64,)
    return [(dtype, case) for dtype in dtypes for case in cases.generate("moe_ffn", "cpu", dtype)]


@pytest.mark.parametrize("dtype, case", _all_cases(), ids=lambda p: p.name if isinstance(p, cases.Case) else str(p))
def test_registered_cases_match_reference(dtype, case):
    check_against_reference(case.args, case.kwargs, dtype)


def test_same_inputs_bit_exact_with_reference_in_bf16():
    """On bf16 inputs both round at the same points; only fp32 summation order may differ."""
    for case in cases.generate("moe_ffn", "cpu", torch.bfloat16):
        out = kernel(*case.args, **case.kwargs)
        expected = ref.moe_ffn(*case.args, **case.kwargs)
        diff = (out.float() - expected.float()).abs()
        # At most one bf16 rounding step apart where an fp32 sum lands next to a rounding boundary.
        assert bool((diff <= expected.float().abs() * 2**-7 + 1e-6).all()), case.name


def _weights(fmt, E, N, K, gen, scale_dtype=torch.float32, dtype=torch.float32):
    w = torch.randn(E, N, K, generator=gen) * K**-0.5
    if fmt == "float":
        return w.to(dtype), None
    q, s = quant.fp8_weight_quant(w) if fmt == "fp8" else quant.fp4_quant(w)
    if scale_dtype != torch.float32:
        s = quant.scale_to_ue8m0(s)
        s = s if scale_dtype == torch.uint8 else s.view(torch.float8_e8m0fnu)
    if fmt == "fp4" and scale_dtype == torch.float8_e8m0fnu:
        q = q.view(torch.float4_e2m1fn_x2)
    return q, s


def _layer(T, D, E, inter, k, formats=("float", "float", "float"), shared=None, gen=None, scale_dtype=torch.float32,
           dtype=torch.float32):
    gen = gen or torch.Generator().manual_seed(0)
    x = torch.randn(T, D, generator=gen).to(dtype)
    gate = torch.randn(E, D, generator=gen) * D**-0.5
    bias = torch.randn(E, generator=gen) * 0.1
    (w1, s1), (w3, s3), (w2, s2) = (_weights(f, E, n, kk, gen, scale_dtype, dtype)
                                    for f, n, kk in zip(formats, (inter, inter, D), (D, D, inter)))
    kwargs = dict(w1_scale=s1, w3_scale=s3, w2_scale=s2)
    if shared is not None:
        (a, sa), (b, sb), (c, sc) = (_weights(shared, 1, n, kk, gen, scale_dtype, dtype)
                                     for n, kk in ((inter, D), (inter, D), (D, inter)))
        a, b, c = (w[0] for w in (a, b, c))
        sa, sb, sc = (None if s is None else s[0] for s in (sa, sb, sc))
        kwargs.update(shared_w1=a, shared_w3=b, shared_w2=c, shared_w1_scale=sa, shared_w3_scale=sb,
                      shared_w2_scale=sc, shared_swiglu_limit=10.0)
    return (x, gate, w1, w3, w2, k, 2.5, bias), kwargs


@pytest.mark.parametrize("formats", [("fp8", "fp8", "fp8"), ("fp4", "fp4", "fp4"), ("fp8", "fp4", "float"),
                                     ("float", "fp8", "fp4")])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.uint8, torch.float8_e8m0fnu])
def test_quantised_formats_and_scale_encodings(formats, scale_dtype):
    # 20 tokens over 3 experts: some experts see > 8 rows (dequantise + mm), T=1 below sees 1 (fused rows).
    for T in (20, 1):
        args, kwargs = _layer(T, 256, 3, 128, 2, formats, shared="fp8", scale_dtype=scale_dtype)
        check_against_reference(args, kwargs, torch.float32)


def test_quantised_experts_see_fp8_activations():
    """A quantised expert must read FP8 fake-quantised inputs: without them the output moves measurably."""
    args, kwargs = _layer(6, 128, 4, 128, 2, ("fp8", "fp8", "fp8"))
    out = kernel(*args, **kwargs)
    dense = [quant.fp8_weight_dequant(w, kwargs[f"{n}_scale"]) for n, w in zip(("w1", "w3", "w2"), args[2:5])]
    unquantised_inputs = ref.moe_ffn(*args[:2], *dense, *args[5:])
    assert (out - unquantised_inputs).abs().max() > 1e-4
    assert_close(out, ref.moe_ffn(*args, **kwargs), torch.float32)


@pytest.mark.parametrize("fmt", ["fp8", "fp4"])
@pytest.mark.parametrize("T, E", [(3, 2), (20, 1)])
def test_fp8_activation_rounding_over_every_magnitude(fmt, T, E):
    """Permutation weights make every output element one chain of a single input element (sums exact in any
    order), so the FP8 activation rounding, subnormal codes included, is compared elementwise, relatively."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(T, 128, generator=gen) * 2.0 ** torch.randint(-24, 4, (T, 128), generator=gen)
    gate = torch.randn(E, 128, generator=gen)

    def permutations(scale):
        return torch.stack([torch.eye(128)[torch.randperm(128, generator=gen)] * scale for _ in range(E)])

    quantise = quant.fp8_weight_quant if fmt == "fp8" else quant.fp4_quant
    (w1, s1), (w3, s3), (w2, s2) = quantise(permutations(0.5)), quantise(permutations(0.5)), quantise(permutations(2.0))
    args, kwargs = (x, gate, w1, w3, w2, 1, 1.0), dict(w1_scale=s1, w3_scale=s3, w2_scale=s2, swiglu_limit=0.0)
    out = kernel(*args, **kwargs)
    torch.testing.assert_close(out, ref.moe_ffn(*args, **kwargs), rtol=1e-5, atol=0)


def test_ties_pick_lower_expert_and_large_logits_are_linear():
    gen = torch.Generator().manual_seed(1)
    args, kwargs = _layer(9, 64, 8, 32, 3, gen=gen)
    x, gate, w1, w3, w2, k, scale, _ = args
    gate = gate.clone()
    gate[4:] = gate[:4]  # experts e and e + 4 always tie
    gate *= 40.0  # many logits far above softplus's linear threshold of 20
    check_against_reference((x, gate, w1, w3, w2, 3, scale), kwargs, torch.float32)
    # With one expert per token the lower twin must win: experts 4..7 are never read, so poisoning
    # them changes nothing.
    poisoned = [w.clone() for w in (w1, w3, w2)]
    for w in poisoned:
        w[4:] = float("nan")
    top1 = kernel(x, gate, w1, w3, w2, 1, scale, **kwargs)
    assert not torch.isnan(top1).any()
    assert torch.equal(kernel(x, gate, *poisoned, 1, scale, **kwargs), top1)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_hash_routing_ignores_bias_and_keeps_table_order(index_dtype):
    gen = torch.Generator().manual_seed(2)
    args, kwargs = _layer(7, 64, 16, 32, 6, shared="float", gen=gen)
    tid2eid = torch.stack([torch.randperm(16, generator=gen)[:6] for _ in range(30)]).to(index_dtype)
    token_ids = torch.randint(0, 30, (7,), generator=gen).to(index_dtype)
    x, gate, w1, w3, w2, k, scale, bias = args
    out = check_against_reference((x, gate, w1, w3, w2, k, scale, bias, token_ids, tid2eid), kwargs, torch.float32)
    without_bias = kernel(x, gate, w1, w3, w2, k, scale, None, token_ids, tid2eid, **kwargs)
    assert torch.equal(out, without_bias)


def test_one_token_with_mostly_empty_experts_and_empty_batch():
    args, kwargs = _layer(1, 64, 32, 48, 2, shared="float")
    check_against_reference(args, kwargs, torch.float32)
    empty = (args[0][:0], *args[1:])
    out = kernel(*empty, **kwargs)
    assert out.shape == (0, 64) and out.dtype == torch.float32


def test_non_contiguous_inputs_are_made_contiguous():
    args, kwargs = _layer(5, 64, 4, 32, 2, shared="float")
    x, gate, w1, w3, w2, *rest = args
    x_t = x.t().contiguous().t()
    w1_t = w1.transpose(1, 2).contiguous().transpose(1, 2)
    assert not x_t.is_contiguous() and not w1_t.is_contiguous()
    assert torch.equal(kernel(x_t, gate, w1_t, w3, w2, *rest, **kwargs), kernel(*args, **kwargs))


@settings(max_examples=12, deadline=None)
@given(T=st.integers(1, 12), E=st.integers(1, 10), k_frac=st.floats(0.0, 1.0), limit=st.sampled_from([0.0, 0.5, 10.0]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]), with_bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_random_layers_match_reference(T, E, k_frac, limit, dtype, with_bias, seed):
    k = 1 + int(k_frac * (E - 1))
    args, kwargs = _layer(T, 32, E, 24, k, shared="float", gen=torch.Generator().manual_seed(seed), dtype=dtype)
    args = (*args[:7], args[7] if with_bias else None)
    kwargs.update(swiglu_limit=limit)
    check_against_reference(args, kwargs, dtype)


def _error_cases():
    args, kwargs = _layer(4, 128, 4, 128, 2, ("fp8", "fp4", "float"), shared="float")
    x, gate, w1, w3, w2, k, scale, bias = args
    ids, table = torch.tensor([0, 1, 2, 3]), torch.tensor([[0, 1]] * 5)
    return [
        ("x", (x.int(), *args[1:]), kwargs),
        ("gate", (x, gate[:, :64], *args[2:]), kwargs),
        ("w3", (x, gate, w1, w3[:, :64], *args[4:]), kwargs),
        ("w2", (x, gate, w1, w3, w2[:, :, :64], *args[5:]), kwargs),
        ("w1_scale", args, {**kwargs, "w1_scale": None}),
        ("w2_scale", args, {**kwargs, "w2_scale": torch.ones(4, 1, 1)}),
        ("w1_scale", args, {**kwargs, "w1_scale": kwargs["w1_scale"][:, :, :0]}),
        ("w3_scale", args, {**kwargs, "w3_scale": kwargs["w3_scale"][..., :3]}),
        ("shared_w2", args, {**kwargs, "shared_w2": None}),
        ("shared_w1", args, {**kwargs, "shared_w1": kwargs["shared_w1"][:, :64]}),
        ("topk", (*args[:5], 0, scale, bias), kwargs),
        ("topk", (*args[:5], 5, scale, bias), kwargs),
        ("bias", (*args[:7], bias[:3]), kwargs),
        ("bias", (*args[:7], bias.half()), kwargs),
        ("tid2eid", (*args, ids), kwargs),
        ("token_ids", (*args, ids.float(), table), kwargs),
        ("token_ids", (*args, ids + 2, table), kwargs),
        ("tid2eid", (*args, ids, table + 3), kwargs),
        ("tid2eid", (*args, ids, table[:, :1]), kwargs),
    ]


@pytest.mark.parametrize("arg, args, kwargs", _error_cases(), ids=[c[0] for c in _error_cases()])
def test_errors_name_the_argument_like_the_reference(arg, args, kwargs):
    with pytest.raises(ValueError, match=f"'{arg}'"):
        ref.moe_ffn(*args, **kwargs)
    before = _extension().kernel_calls()["moe_ffn"]
    with pytest.raises(ValueError, match=f"'{arg}'"):
        OP(*args, **kwargs)
    # Shape/dtype errors come before the call is counted; the data checks of hash routing after it.
    assert _extension().kernel_calls()["moe_ffn"] - before <= 1


def test_kernel_is_reported_as_the_cpu_route():
    info = _extension().kernel_info()["moe_ffn"]
    assert "C++" in info


@pytest.mark.parametrize("formats", [("float",) * 3, ("fp4", "fp8", "fp4")])
@pytest.mark.parametrize("T", [3, 40])
def test_experts_in_parallel_threads_match_reference(formats, T):
    args, kwargs = _layer(T, 128, 6, 128, 2, formats, shared="fp8" if formats[0] != "float" else "float")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        check_against_reference(args, kwargs, torch.float32)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("T", [2, 40])
def test_low_precision_and_fp64_on_few_and_many_rows_per_expert(dtype, T):
    """Few rows take the direct dot products, many rows one ATen mm in the input dtype (float weights)."""
    args, kwargs = _layer(T, 64, 3, 96, 2, shared="float", dtype=dtype)
    check_against_reference(args, kwargs, dtype)


@pytest.mark.parametrize("x_dtype, w_dtype", [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)])
@pytest.mark.parametrize("T", [2, 30])
def test_weights_of_another_float_dtype_and_fp64_bias(x_dtype, w_dtype, T):
    """Float weights need not share x's dtype: the GEMMs then run in fp32 (as the reference); an fp64 bias
    selects in fp64 like torch's type promotion of scores + bias."""
    args, kwargs = _layer(T, 64, 4, 32, 2, shared="float", dtype=w_dtype)
    x, gate, w1, w3, w2, k, scale, bias = args
    check_against_reference((x.to(x_dtype), gate.double(), w1, w3, w2, k, scale, bias.double()), kwargs, x_dtype)
