"""The roofline column of device runs: published peaks are looked up by device name and shown as such."""

from __future__ import annotations

import math

import pytest
import torch
from rich.console import Console

from v4_ascend.bench import harness, peaks


@pytest.mark.parametrize(("name", "entry"), [
    ("Ascend910B2", "ascend910b2"), ("NVIDIA H200", "h200"), ("NVIDIA H200 NVL", "h200"), ("MLU370-X8", "mlu370-x8"),
    ("Ascend910B4", None), ("MLU590-M9", None), ("NVIDIA A100-SXM4-80GB", None),
])
def test_lookup_matches_only_listed_devices(name, entry):
    found = peaks.lookup(name)
    assert (found.device if found else None) == entry


def test_units_follow_the_bound_and_unlisted_dtypes_have_no_figure():
    h200 = peaks.lookup("NVIDIA H200")
    assert h200.of("gemm", torch.bfloat16) == 989e3  # GFLOP/s
    assert h200.of("copy", torch.bfloat16) == 4.8e3  # GB/s
    assert peaks.lookup("Ascend910B2").of("gemm", torch.float32) is None


def test_cpu_has_no_device_name():
    assert peaks.device_name(torch.device("cpu")) is None


def _row(published):
    case = harness.Case("op", "c", "s", torch.bfloat16, lambda device: None)
    return harness.Row(case, "peer", "cpu", harness.Timing((1e-3,)), harness.Timing((2e-3,)), flops=1e9, bytes=0.0,
                       ceiling=2e3, published=published)


def test_roofline_column_appears_only_with_a_published_peak():
    row = _row(published=4e3)  # 1 GFLOP in 1 ms = 1000 GFLOP/s: 25 % of 4000
    assert row.fraction_of_published(row.kernel) == pytest.approx(0.25)
    console = Console(record=True, width=250)
    harness.render([row], harness.Ceilings({torch.bfloat16: 2e3}, 10.0), console)
    text = console.export_text()
    assert "published peak" in text and "25 %" in text
    plain = _row(published=None)
    assert math.isnan(plain.fraction_of_published(plain.kernel))
    console = Console(record=True, width=250)
    harness.render([plain], harness.Ceilings({torch.bfloat16: 2e3}, 10.0), console)
    assert "published peak" not in console.export_text()
