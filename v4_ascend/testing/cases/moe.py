"""Input cases of the MoE family."""

from __future__ import annotations

import torch

from v4_ascend.reference import quant
from v4_ascend.testing.cases import Case, randint, randn, register


def _offsets(counts, device):
    return torch.tensor(counts, dtype=torch.int64).cumsum(0).to(torch.int32).to(device)


@register("grouped_gemm")
def grouped_gemm_cases(device, dtype, gen):
    cases = []
    for name, counts, K, N, pad in [
        ("empty-and-one-row-groups", [3, 0, 1, 0, 5], 32, 24, 0),
        ("unaligned", [17, 33, 1, 7], 72, 40, 0),
        ("trailing-rows-zero", [4, 4], 16, 8, 3),
        ("flash-like-8x64", [64] * 8, 256, 128, 0),
    ]:
        M = sum(counts) + pad
        x = randn(M, K, dtype=dtype, device=device, gen=gen)
        w = randn(len(counts), N, K, dtype=dtype, device=device, gen=gen, scale=K**-0.5)
        cases.append(Case(name, (x, w, _offsets(counts, device))))
    return cases


@register("grouped_gemm_masked")
def grouped_gemm_masked_cases(device, dtype, gen):
    cases = []
    for name, G, Mmax, K, N in [("decode-32x4", 32, 4, 64, 48), ("one-group", 1, 3, 16, 8)]:
        x = randn(G, Mmax, K, dtype=dtype, device=device, gen=gen)
        w = randn(G, N, K, dtype=dtype, device=device, gen=gen, scale=K**-0.5)
        counts = randint(0, Mmax + 1, (G,), device=device, gen=gen)
        cases.append(Case(name, (x, w, counts)))
    return cases


def _random_topk(T, E, k, gen, device):
    """``[T, k]`` int32 distinct experts per token."""
    return torch.rand(T, E, generator=gen).argsort(dim=1)[:, :k].to(torch.int32).to(device)


@register("moe_route", dtypes=(torch.float32, torch.float64))
def moe_route_cases(device, dtype, gen):
    cases = []
    for name, T, E, k in [("flash-256-top6", 8, 256, 6), ("small-16-top4", 5, 16, 4), ("top1", 3, 8, 1)]:
        logits = randn(T, E, dtype=dtype, device=device, gen=gen, scale=3.0)
        bias = randn(E, dtype=dtype, device=device, gen=gen, scale=0.1)
        cases.append(Case(f"{name}-bias", (logits, k, 1.5, bias)))
        cases.append(Case(name, (logits, k, 2.5)))
    ties = randn(4, 12, dtype=dtype, device=device, gen=gen)
    ties[:, 6:] = ties[:, :6]  # every score appears twice: the lower expert index must win
    ties[0, :] = 25.0  # linear softplus region, all equal
    cases.append(Case("ties-and-large-logits", (ties, 5, 1.0)))
    V, T, E, k = 50, 7, 16, 6
    tid2eid = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(V)]).to(torch.int32).to(device)
    token_ids = randint(0, V, (T,), dtype=torch.int64, device=device, gen=gen)
    logits = randn(T, E, dtype=dtype, device=device, gen=gen)
    bias = randn(E, dtype=dtype, device=device, gen=gen)
    cases.append(Case("hash-layer", (logits, k, 1.5, None, token_ids, tid2eid)))
    cases.append(Case("hash-layer-with-bias", (logits, k, 1.5, bias, token_ids, tid2eid)))
    return cases


@register("moe_dispatch")
def moe_dispatch_cases(device, dtype, gen):
    cases = []
    for name, T, D, E, k in [("flash-like-256-top6", 16, 64, 256, 6), ("few-experts", 9, 24, 4, 2),
                             ("one-token", 1, 8, 8, 6)]:
        x = randn(T, D, dtype=dtype, device=device, gen=gen)
        cases.append(Case(name, (x, _random_topk(T, E, k, gen, device), E)))
    x = randn(6, 16, dtype=dtype, device=device, gen=gen)
    idx = _random_topk(6, 8, 3, gen, device)
    idx[::2, 1] = -1  # slots routed elsewhere (expert parallelism)
    cases.append(Case("invalid-slots", (x, idx, 8)))
    return cases


@register("moe_combine")
def moe_combine_cases(device, dtype, gen):
    cases = []
    for case in moe_dispatch_cases(device, dtype, gen):
        x, idx, E = case.args
        _, _, slots = torch.ops.v4_ascend.moe_dispatch.default(x, idx, E)
        y = randn(slots.shape[0], 40, dtype=dtype, device=device, gen=gen)
        weights = torch.rand(idx.shape, generator=gen, dtype=torch.float64).to(torch.float32).to(device)
        cases.append(Case(case.name, (y, slots, weights)))
    return cases


@register("moe_swiglu")
def moe_swiglu_cases(device, dtype, gen):
    # Scaled by 8 so that a good share of values passes the +-10 clamp.
    gate = randn(24, 96, dtype=dtype, device=device, gen=gen, scale=8.0)
    up = randn(24, 96, dtype=dtype, device=device, gen=gen, scale=8.0)
    weight = torch.rand(24, generator=gen, dtype=torch.float64).to(torch.float32).to(device)
    return [
        Case("routed-weighted", (gate, up, 10.0, weight)),
        Case("shared-unclamped", (gate, up, 0.0)),
        Case("batched-3d", (gate.view(4, 6, 96), up.view(4, 6, 96), 10.0, weight.view(4, 6))),
    ]


def _expert_weights(fmt, E, inter, D, dtype, device, gen):
    """``(w1, w3, w2, w1_scale, w3_scale, w2_scale)`` in one format (``float``, ``fp8`` or ``fp4``)."""
    dense = [randn(E, inter, D, dtype=torch.float32, device=device, gen=gen, scale=D**-0.5),
             randn(E, inter, D, dtype=torch.float32, device=device, gen=gen, scale=D**-0.5),
             randn(E, D, inter, dtype=torch.float32, device=device, gen=gen, scale=inter**-0.5)]
    if fmt == "float":
        return (*[w.to(dtype) for w in dense], None, None, None)
    quantise = quant.fp8_weight_quant if fmt == "fp8" else quant.fp4_quant
    pairs = [quantise(w) for w in dense]
    return (*[q for q, _ in pairs], *[s for _, s in pairs])


# A bf16/fp16 run rounds the activations between the expert GEMMs and FP8-quantises them for
# quantised experts, so one flipped FP8 code moves an output by a quantisation step (~2 % of its
# magnitude) against the fp32 reference; the relative-L2 error stays ~1e-2 (bf16) / ~5e-3 (fp16).
@register("moe_ffn", tolerance={torch.bfloat16: (1.5e-1, 5e-2), torch.float16: (6e-2, 2e-2)})
def moe_ffn_cases(device, dtype, gen):
    cases = []
    T, D, E, inter, k = 12, 128, 8, 128, 3
    # Quantised weights only in fp32: with bf16/fp16 inputs V4 rounds the GEMM outputs to that dtype and
    # re-quantises them to FP8 before the next GEMM, so the distance to the fp32 reference is set by FP8
    # code flips (~5e-2), not by the kernel under test.
    for fmt in ("float", "fp8", "fp4") if dtype == torch.float32 else ("float",):
        x = randn(T, D, dtype=dtype, device=device, gen=gen)
        gate = randn(E, D, dtype=torch.float32, device=device, gen=gen, scale=D**-0.5)
        bias = randn(E, dtype=torch.float32, device=device, gen=gen, scale=0.1)
        w1, w3, w2, s1, s3, s2 = _expert_weights(fmt, E, inter, D, dtype, device, gen)
        sw1, sw3, sw2, ss1, ss3, ss2 = (t if t is None else t[0] for t in _expert_weights(
            "fp8" if fmt != "float" else "float", 1, 2 * inter, D, dtype, device, gen))
        cases.append(Case(f"{fmt}-experts-shared", (x, gate, w1, w3, w2, k, 1.5, bias), dict(
            w1_scale=s1, w3_scale=s3, w2_scale=s2, shared_w1=sw1, shared_w3=sw3, shared_w2=sw2,
            shared_w1_scale=ss1, shared_w3_scale=ss3, shared_w2_scale=ss2)))
    V = 40
    tid2eid = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(V)]).to(torch.int32).to(device)
    token_ids = randint(0, V, (T,), dtype=torch.int64, device=device, gen=gen)
    x = randn(T, 64, dtype=dtype, device=device, gen=gen)
    gate = randn(E, 64, dtype=torch.float32, device=device, gen=gen)
    w1, w3, w2, *_ = _expert_weights("float", E, 96, 64, dtype, device, gen)
    cases.append(Case("hash-routed-no-shared", (x, gate, w1, w3, w2, k, 1.5, None, token_ids, tid2eid)))
    return cases
