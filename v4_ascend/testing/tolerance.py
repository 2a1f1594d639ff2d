"""Per-dtype tolerances for kernels versus the reference, and the comparison used everywhere.

Low-precision kernels are compared against the fp32 reference run on the same (already rounded)
inputs, so the tolerance covers the kernel's own rounding, not input quantisation.
"""

from __future__ import annotations

import torch

# (atol, rtol). bf16/fp16/fp32 follow the vendor validation kits (torch_mlu: 1.6e-2 / 1e-3 / 1.3e-6
# relative), loosened in atol for fp32 sums of hundreds of terms.
TOLERANCE = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


# Quantised codes are data, not approximations: never upcast, always compared bit for bit.
QUANTISED_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e8m0fnu, torch.float4_e2m1fn_x2)


def reference_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def upcast(value):
    """Floating tensors (also inside tuples, lists and dicts) to the reference dtype, on the host.

    Quantised codes (fp8/fp4) are data, not approximations, and keep their dtype."""
    if isinstance(value, torch.Tensor):
        value = value.cpu()
        if value.is_floating_point() and value.dtype not in QUANTISED_DTYPES:
            return value.to(reference_dtype(value.dtype))
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(upcast(v) for v in value)
    if isinstance(value, dict):
        return {k: upcast(v) for k, v in value.items()}
    return value


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max absolute difference, with matching infinities counted as equal."""
    a, e = actual.detach().cpu().double(), expected.detach().cpu().double()
    same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    diff = (a - e).abs().masked_fill(same, 0.0)
    return float(diff.max()) if diff.numel() else 0.0


def assert_close(
    actual, expected, dtype: torch.dtype, name: str = "output", tolerance: tuple[float, float] | None = None
) -> None:
    """Exact for integer and quantised tensors (their bit patterns), per-dtype atol/rtol for floating ones."""
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    if expected.dtype in QUANTISED_DTYPES:
        actual, expected = actual.view(torch.uint8), expected.view(torch.uint8)
    if not expected.is_floating_point():
        torch.testing.assert_close(actual, expected, atol=0, rtol=0, msg=lambda m: f"{name}: {m}")
        return
    atol, rtol = tolerance or TOLERANCE[dtype]
    torch.testing.assert_close(
        actual.to(expected.dtype), expected, atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: f"{name}: {m}"
    )
