"""Input cases of the quantisation family.

Activations mix ordinary blocks with a block of tiny values (below the amax floor) and a block with an
outlier, so that floors, clamps and scale extremes are exercised by every backend.
"""

from __future__ import annotations

import torch

from v4_ascend.reference import quant as ref
from v4_ascend.testing.cases import Case, randn, register


def _activations(shape, block, dtype, device, gen):
    x = randn(*shape, dtype=torch.float32, device="cpu", gen=gen)
    x[..., :block] *= 1e-7  # first block below the FP8 amax floor
    x[..., -1] *= 1e3  # an outlier in the last block
    return x.to(dtype).to(device)


_ACT_SHAPES = [("production-row-4096", (4, 4096)), ("batched-3d", (2, 3, 256)), ("one-block", (1, 128))]


def _act_cases(block, dtype, device, gen):
    return [(name, _activations(shape, block, dtype, device, gen)) for name, shape in _ACT_SHAPES]


@register("fp8_quant")
def fp8_quant_cases(device, dtype, gen):
    return [Case(f"{name}-b{b}", (x, b)) for b in (128, 64) for name, x in _act_cases(b, dtype, device, gen)]


@register("fp8_fake_quant")
def fp8_fake_quant_cases(device, dtype, gen):
    return fp8_quant_cases(device, dtype, gen)


@register("fp8_dequant")
def fp8_dequant_cases(device, dtype, gen):
    cases = []
    for case in fp8_quant_cases(device, torch.float32, gen):
        q, scale = ref.fp8_quant(*case.args)
        cases.append(Case(case.name, (q, scale, dtype)))
        cases.append(Case(f"{case.name}-ue8m0", (q, ref.scale_to_ue8m0(scale), dtype)))
    return cases


@register("fp4_quant")
def fp4_quant_cases(device, dtype, gen):
    return [Case(f"{name}-b{b}", (x, b)) for b in (32, 16) for name, x in _act_cases(b, dtype, device, gen)]


@register("fp4_fake_quant")
def fp4_fake_quant_cases(device, dtype, gen):
    return fp4_quant_cases(device, dtype, gen)


@register("fp4_dequant")
def fp4_dequant_cases(device, dtype, gen):
    cases = []
    for case in fp4_quant_cases(device, torch.float32, gen):
        q, scale = ref.fp4_quant(*case.args)
        cases.append(Case(case.name, (q, scale, dtype)))
        cases.append(Case(f"{case.name}-ue8m0", (q, ref.scale_to_ue8m0(scale), dtype)))
    return cases


def _weights(dtype, device, gen):
    return [
        ("expert-stack-256x384", randn(2, 256, 384, dtype=dtype, device=device, gen=gen, scale=0.02)),
        ("partial-edge-tiles", randn(200, 300, dtype=dtype, device=device, gen=gen, scale=0.05)),
        ("one-tile", randn(128, 128, dtype=dtype, device=device, gen=gen)),
    ]


@register("fp8_weight_quant")
def fp8_weight_quant_cases(device, dtype, gen):
    return [Case(name, (w, 128)) for name, w in _weights(dtype, device, gen)]


@register("fp8_weight_fake_quant")
def fp8_weight_fake_quant_cases(device, dtype, gen):
    return fp8_weight_quant_cases(device, dtype, gen)


@register("fp8_weight_dequant")
def fp8_weight_dequant_cases(device, dtype, gen):
    cases = []
    for name, w in _weights(torch.float32, device, gen):
        q, scale = ref.fp8_weight_quant(w, 128)
        cases.append(Case(name, (q, scale, 128, dtype)))
    return cases


@register("hadamard_rotate")
def hadamard_rotate_cases(device, dtype, gen):
    return [
        Case("indexer-heads-128", (randn(6, 4, 128, dtype=dtype, device=device, gen=gen),)),
        Case("n-1", (randn(5, 1, dtype=dtype, device=device, gen=gen),)),
        Case("n-64", (randn(3, 64, dtype=dtype, device=device, gen=gen),)),
    ]
