"""Published peaks of accelerators, for the roofline column of ``v4-ascend bench --device ...``
(perf.md: "a roofline column computed from the device's published peak, clearly labelled as such").

These are the vendors' (or press) figures, not measurements: the measured ceilings of the run stay the
primary reference. Only devices with a per-device figure are listed (``shared/spec/vendors.md`` §7): a
910C package figure covers two dies that PyTorch sees as two NPUs, and MLU590 has no official figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PublishedPeak:
    device: str  # the name this entry matches (lower case, no spaces)
    gemm_tflops: dict[torch.dtype, float]  # dense matrix peak per dtype
    bandwidth_tbps: float  # memory bandwidth
    source: str

    def of(self, bound: str, dtype: torch.dtype) -> float | None:
        """GFLOP/s (gemm-bound) or GB/s (copy-bound) of this peak; None when no figure covers the dtype."""
        if bound == "copy":
            return self.bandwidth_tbps * 1e3
        tflops = self.gemm_tflops.get(dtype)
        return None if tflops is None else tflops * 1e3

    def __str__(self) -> str:
        gemm = ", ".join(f"{str(k).removeprefix('torch.')} {v:g} TFLOPS" for k, v in self.gemm_tflops.items())
        return f"{self.device}: {gemm}; {self.bandwidth_tbps:g} TB/s ({self.source})"


PEAKS = (
    PublishedPeak("ascend910b2", {torch.bfloat16: 354.0, torch.float16: 354.0}, 1.6,
                  "derived from 24 cube cores at 1.8 GHz; HBM 1.5-1.8 TB/s (vendors.md)"),
    PublishedPeak("mlu370-x8", {torch.bfloat16: 96.0, torch.float16: 96.0}, 0.6144, "Cambricon press figures"),
    PublishedPeak("h200", {torch.bfloat16: 989.0, torch.float16: 989.0, torch.float32: 67.0}, 4.8,
                  "NVIDIA H200 SXM datasheet, dense"),
)


def lookup(name: str) -> PublishedPeak | None:
    """The entry whose name occurs in the device name (case and spaces ignored), if any."""
    key = name.lower().replace(" ", "")
    return next((peak for peak in PEAKS if peak.device in key), None)


def device_name(device: torch.device) -> str | None:
    """The accelerator's model name as its PyTorch module reports it (None on the CPU or when it cannot)."""
    if device.type == "cpu":
        return None
    module = getattr(torch, device.type, None)
    try:
        return module.get_device_name(device.index or 0)
    except (AttributeError, RuntimeError, AssertionError):
        return None
