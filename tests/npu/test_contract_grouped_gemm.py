"""Contract tests of the Ascend grouped GEMMs: our calls into the ``torch_npu`` test double.

They run in the ``V4_ASCEND_SIM_DEVICE=npu`` process: tensors on the simulated ``npu`` device reach
our PrivateUse1 kernels, which call the double of ``torch_npu.npu_grouped_matmul``. The double
asserts the documented contract (int64 group list, cumulative type, M-axis grouping, single output,
transposed weight, last cumulative value equal to x's rows); the results are checked against an
independent per-row oracle written here. They prove our argument mapping, not the vendor's numerics.
"""

from __future__ import annotations

import sys

import pytest
import torch
from doubles import contract_marks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v4_ascend import ops
from v4_ascend.testing import tolerance

pytestmark = contract_marks("npu")

FLOATS = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture
def double():
    return sys.modules["torch_npu"]


@pytest.fixture
def kernels():
    from v4_ascend.backends.npu import kernels

    return kernels


def _per_row_oracle(x, w, counts, rows_total):
    """fp64 loop over rows: row r belongs to the group whose cumulative range contains it."""
    x, w = x.cpu().double(), w.cpu().double()
    ends = torch.tensor(counts).cumsum(0)
    y = torch.zeros(rows_total, w.shape[1], dtype=torch.float64)
    for r in range(int(ends[-1]) if len(counts) else 0):
        g = int(torch.searchsorted(ends, r, right=True))
        y[r] = w[g] @ x[r]
    return y


def _grouped_inputs(counts, pad, K, N, dtype, device):
    M = sum(counts) + pad
    x = torch.randn(M, K, dtype=dtype).to(device)
    w = (torch.randn(len(counts), N, K) * K**-0.5).to(dtype).to(device)
    offsets = torch.tensor(counts).cumsum(0).to(torch.int32).to(device)
    return x, w, offsets


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("counts, pad", [([3, 0, 1, 0, 5], 0), ([17, 33, 1, 7], 4), ([0, 6], 2)])
def test_contract_grouped_gemm_passes_offsets_as_int64_cumulative_group_list(double, device, dtype, counts, pad):
    K, N = 40, 24
    x, w, offsets = _grouped_inputs(counts, pad, K, N, dtype, device)
    before = double.calls["npu_grouped_matmul"]
    y = ops.grouped_gemm(x, w, offsets)
    assert double.calls["npu_grouped_matmul"] == before + 1
    call = double.last_kwargs["npu_grouped_matmul"]
    assert call["group_list"].dtype == torch.int64
    assert call["group_list"].cpu().tolist() == offsets.cpu().tolist()
    assert (call["group_type"], call["group_list_type"], call["split_item"]) == (0, 0, 3)
    assert call["weight_transposed"], "w [G, N, K] must reach the vendor as a transposed [G, K, N] view"
    assert y.device.type == "npu" and y.dtype == dtype and y.shape == (x.shape[0], N)
    expected = _per_row_oracle(x, w, counts, x.shape[0])
    tolerance.assert_close(y.cpu(), expected.float(), dtype)
    assert torch.equal(y.cpu()[sum(counts):], torch.zeros(pad, N, dtype=dtype)), "rows past offsets[-1] are zero"


def test_contract_grouped_gemm_strided_inputs_reach_the_vendor_in_a_documented_layout(double, device):
    counts, K, N = [5, 0, 7], 24, 16
    x_wide = torch.randn(12, 2 * K).to(device)
    w_kn = (torch.randn(3, K, N) * K**-0.5).to(device)
    x, w = x_wide[:, ::2], w_kn.transpose(1, 2)  # strided x, w [G, N, K] that is not contiguous
    offsets = torch.tensor(counts).cumsum(0).to(torch.int32).to(device)
    y = ops.grouped_gemm(x, w, offsets)
    assert double.last_kwargs["npu_grouped_matmul"]["weight_transposed"]
    tolerance.assert_close(y.cpu(), _per_row_oracle(x, w, counts, 12).float(), torch.float32)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=st.lists(st.integers(0, 5), min_size=1, max_size=6), pad=st.integers(0, 3))
def test_contract_grouped_gemm_property_any_group_sizes(double, device, counts, pad):
    x, w, offsets = _grouped_inputs(counts, pad, 8, 5, torch.float32, device)
    before = double.calls["npu_grouped_matmul"]
    y = ops.grouped_gemm(x, w, offsets)
    assert double.calls["npu_grouped_matmul"] == before + (1 if sum(counts) else 0)
    tolerance.assert_close(y.cpu(), _per_row_oracle(x, w, counts, x.shape[0]).float(), torch.float32)


def test_contract_grouped_gemm_all_groups_empty_makes_no_vendor_call(double, device):
    x, w, offsets = _grouped_inputs([0, 0, 0], 5, 16, 8, torch.bfloat16, device)
    before = double.calls["npu_grouped_matmul"]
    y = ops.grouped_gemm(x, w, offsets)
    assert double.calls["npu_grouped_matmul"] == before
    assert torch.equal(y.cpu(), torch.zeros(5, 8, dtype=torch.bfloat16))


def test_contract_grouped_gemm_rejects_decreasing_offsets_on_device(device):
    x, w, _ = _grouped_inputs([2, 2], 0, 8, 4, torch.float16, device)
    with pytest.raises(ValueError, match="grouped_gemm: 'offsets'"):
        ops.grouped_gemm(x, w, torch.tensor([3, 1], dtype=torch.int32).to(device))


@pytest.mark.parametrize(
    "dtype, groups, reason",
    [(torch.float64, 3, "got float64"), (torch.float32, 1025, "at most 1024 groups")],
)
def test_contract_grouped_gemm_outside_capabilities_runs_reference_on_device(
    double, kernels, device, dtype, groups, reason
):
    counts = [1] * groups
    x, w, offsets = _grouped_inputs(counts, 1, 4, 2, dtype, device)
    before = double.calls["npu_grouped_matmul"]
    fallbacks = sum(n for (op, why), n in kernels.KERNELS.reference_fallbacks().items() if reason in why)
    y = ops.grouped_gemm(x, w, offsets)
    assert double.calls["npu_grouped_matmul"] == before, "the vendor op must not see an unsupported call"
    assert sum(n for (op, why), n in kernels.KERNELS.reference_fallbacks().items() if reason in why) == fallbacks + 1
    assert y.device.type == "npu", "the reference composition runs on the device, never on the CPU"
    expected = _per_row_oracle(x, w, counts, x.shape[0])
    tolerance.assert_close(y.cpu(), expected.to(y.dtype), dtype)


def test_contract_grouped_gemm_on_950_runs_reference_on_device(double, kernels, device, monkeypatch):
    from v4_ascend.backends.npu.capabilities import Soc

    monkeypatch.setattr(kernels, "soc", lambda: Soc.A5)
    x, w, offsets = _grouped_inputs([2, 3], 0, 8, 4, torch.bfloat16, device)
    before = double.calls["npu_grouped_matmul"]
    y = ops.grouped_gemm(x, w, offsets)
    assert double.calls["npu_grouped_matmul"] == before
    assert any("not on 950PR/DT" in why for (_, why) in kernels.KERNELS.reference_fallbacks())
    assert y.device.type == "npu"
    tolerance.assert_close(y.cpu(), _per_row_oracle(x, w, [2, 3], 5).float(), torch.bfloat16)


@pytest.mark.parametrize("dtype", FLOATS)
def test_contract_grouped_gemm_masked_uses_uniform_groups_and_zeroes_padding(double, device, dtype):
    G, Mmax, K, N = 6, 4, 32, 16
    x = torch.randn(G, Mmax, K, dtype=dtype)
    counts = torch.tensor([0, 4, 1, 3, 2, 4], dtype=torch.int32)
    for g, c in enumerate(counts.tolist()):
        x[g, c:] = float("nan")  # padding rows are garbage; they must still come out exactly zero
    w = (torch.randn(G, N, K) * K**-0.5).to(dtype)
    before = double.calls["npu_grouped_matmul"]
    y = ops.grouped_gemm_masked(x.to(device), w.to(device), counts.to(device))
    assert double.calls["npu_grouped_matmul"] == before + 1
    call = double.last_kwargs["npu_grouped_matmul"]
    assert call["group_list"].dtype == torch.int64
    assert call["group_list"].cpu().tolist() == [Mmax * (g + 1) for g in range(G)]
    assert (call["group_type"], call["group_list_type"]) == (0, 0)
    assert y.device.type == "npu" and y.shape == (G, Mmax, N)
    expected = torch.zeros(G, Mmax, N, dtype=torch.float64)
    for g, c in enumerate(counts.tolist()):
        for m in range(c):
            expected[g, m] = w[g].double() @ x[g, m].double()
    tolerance.assert_close(y.cpu(), expected.float(), dtype)
    assert not torch.isnan(y.cpu()).any()


def test_contract_grouped_gemm_masked_rejects_counts_above_mmax(device):
    x = torch.randn(2, 3, 8).to(device)
    w = torch.randn(2, 4, 8).to(device)
    with pytest.raises(ValueError, match="grouped_gemm_masked: 'counts'"):
        ops.grouped_gemm_masked(x, w, torch.tensor([1, 4], dtype=torch.int32).to(device))
