"""Contract tests of the torch_mlu_ops adapter on the simulated ``mlu`` device: the run-time version
check (an unsupported release makes the backend report itself unavailable, with the reason), keyword
resolution across releases, and ``backend_report()`` listing every declared op with route and reason."""

from __future__ import annotations

import inspect

import pytest
import torch
from doubles import contract_marks

import v4_ascend
from v4_ascend import backends, library, ops
from v4_ascend.backends import mlu
from v4_ascend.backends.mlu import tmo
from v4_ascend.backends.mlu.capabilities import CAPABILITIES as TABLE
from v4_ascend.backends.vendor import ON_DEVICE, Decision
from v4_ascend.reference import attention as attn_ref
from v4_ascend.testing import check

pytestmark = contract_marks("mlu")


def test_contract_supported_double_release_loads_the_backend(tmo_double):
    assert tmo_double.__version__.startswith("1.13.")
    assert mlu.unavailable_reason() is None
    assert "mlu" in backends.loaded()


@pytest.mark.parametrize("version", ["1.12.5", "1.14.0", "2.0.0"])
def test_contract_unsupported_release_makes_the_backend_unavailable_with_the_reason(tmo_double, monkeypatch, version):
    monkeypatch.setattr(tmo_double, "__version__", version)
    reason = mlu.unavailable_reason()
    assert reason is not None
    assert f"unsupported torch_mlu_ops {version}" in reason and "torch_mlu_ops 1.13.x" in reason


def test_contract_unsupported_release_fails_a_forced_mlu_backend_loudly(tmo_double, monkeypatch):
    monkeypatch.setattr(tmo_double, "__version__", "1.12.0")
    monkeypatch.setenv(backends.ENV, "mlu")
    monkeypatch.delitem(backends._loaded, "mlu")
    with pytest.raises(RuntimeError, match=r"V4_ASCEND_BACKEND=mlu, but the mlu backend cannot load: unsupported"):
        backends.load()


def _with_parameter_renamed(function, old: str, new: str, received: list):
    """``function`` as a release would have it with parameter ``old`` called ``new``; records the keywords."""

    def renamed(*args, **kwargs):
        received.append(set(kwargs))
        if old in kwargs:
            raise TypeError(f"unexpected keyword argument '{old}'")
        kwargs[old] = kwargs.pop(new)
        return function(*args, **kwargs)

    parameters = [p.replace(name=new) if p.name == old else p for p in inspect.signature(function).parameters.values()]
    renamed.__signature__ = inspect.Signature(parameters)
    renamed.__name__ = function.__name__
    return renamed


def test_contract_sink_keyword_follows_the_installed_release(tmo_double, mlu_arch, monkeypatch):
    """Some tmo releases call the sink ``sink``, others ``learnable_sink``: the adapter passes whichever exists."""
    received = []
    release = _with_parameter_renamed(tmo_double.single_query_cached_kv_attn, "learnable_sink", "sink", received)
    monkeypatch.setattr(tmo_double, "single_query_cached_kv_attn", release)
    q, kv = torch.randn(2, 4, 8).to("mlu"), torch.randn(5, 8).to("mlu")
    idx = torch.tensor([[0, 4, -1], [2, 1, 3]], dtype=torch.int32).to("mlu")
    sink = torch.randn(4).to("mlu")
    out, lse = ops.sparse_attn(q, kv, idx, sink, 8**-0.5)
    want, want_lse = attn_ref.sparse_attn(q.cpu(), kv.cpu(), idx.cpu(), sink.cpu(), 8**-0.5)
    torch.testing.assert_close(out.cpu(), want)
    torch.testing.assert_close(lse.cpu(), want_lse)
    assert len(received) == 1 and "sink" in received[0] and "learnable_sink" not in received[0]


def test_contract_a_release_without_a_sink_parameter_fails_loudly(tmo_double, mlu_arch, monkeypatch):
    original = tmo_double.single_query_cached_kv_attn
    without = [p for p in inspect.signature(original).parameters.values() if p.name != "learnable_sink"]

    def old_release(*args, **kwargs):
        return original(*args, **kwargs)

    old_release.__signature__ = inspect.Signature(without)
    old_release.__name__ = "single_query_cached_kv_attn"
    monkeypatch.setattr(tmo_double, "single_query_cached_kv_attn", old_release)
    q, kv = torch.randn(1, 2, 8).to("mlu"), torch.randn(3, 8).to("mlu")
    idx = torch.tensor([[0, 2]], dtype=torch.int32).to("mlu")
    with pytest.raises(RuntimeError, match=r"single_query_cached_kv_attn has none of the parameters"):
        ops.sparse_attn(q, kv, idx, None, 0.5)


def test_contract_group_gemm_is_called_by_keyword(tmo_double, mlu_arch):
    tmo.group_gemm(torch.randn(3, 4).to("mlu"), torch.randn(1, 2, 4).to("mlu"),
                   torch.tensor([3], dtype=torch.int32).to("mlu"), max_m=3)
    ((args, kwargs),) = tmo_double.history["group_gemm"]
    assert args == () and set(kwargs) == {"a", "b", "m_list", "expand_idx", "c", "alpha", "beta", "max_m"}


def _mlu_rows():
    return {row.op: row for row in v4_ascend.backend_report().rows if row.device == "mlu"}


def test_contract_backend_report_lists_every_declared_op_with_route_and_reason(mlu_arch):
    rows = _mlu_rows()  # the simulated device is named like an MLU590
    assert set(rows) == set(library.ops())
    for op, row in rows.items():
        entry = TABLE.route(op)
        if entry.decision is Decision.VENDOR:
            assert row.backend == "mlu", op
            assert entry.vendor_op in row.kernel and "MLU580/590 (mtp_592): vendor-fused" in row.kernel, row
            assert ON_DEVICE in row.kernel and row.reason.startswith("exact"), row
        else:
            assert row.backend == "reference", op
            mlu_why = [why for why in row.why_not_others if why.startswith("mlu: ")]
            assert mlu_why == [f"mlu: {ON_DEVICE}: {entry.vendor_op or 'no vendor op'} not used: {entry.why}"], row
    assert "learnable_sink" in rows["sparse_attn"].kernel and "256 with bf16 KV" in rows["sparse_attn"].reason


def test_contract_backend_report_on_mlu370_says_why_tmo_is_not_used(mlu_arch):
    mlu_arch("MLU370-X8")
    for op, row in _mlu_rows().items():
        if op in TABLE.vendor_ops():
            assert row.backend == "mlu" and row.kernel == "reference composition on the device (MLU370 (mtp_372))"
            assert "MLU370 (mtp_372) is not supported" in row.reason
        else:
            assert row.backend == "reference"


def test_contract_check_engine_passes_every_case_on_the_simulated_mlu(tmo_double, mlu_arch):
    """What ``v4-ascend check --device mlu`` runs: every op, case and dtype on the device. Ops routed to tmo
    are served by the mlu kernels, the others by the reference composition, which also ran on the device
    (the engine fails any output that is not on it)."""
    results = check.check_all("mlu")
    assert results and all(r.passed for r in results), [r for r in results if not r.passed]
    assert {r.device for r in results} == {"mlu"}
    for result in results:
        assert result.backend == ("mlu" if result.op in TABLE.vendor_ops() else "reference"), result
    used = ("group_gemm", "single_query_cached_kv_attn", "moe_softplus_topk", "hc_split_sinkhorn", "fused_mhc_post")
    for name in used:
        assert tmo_double.calls[name], name


def test_contract_check_engine_fails_a_kernel_whose_output_left_the_device(tmo_double, mlu_arch, monkeypatch):
    original = tmo_double.moe_softplus_topk

    def to_host(**kwargs):
        return tuple(t.cpu() for t in original(**kwargs))

    monkeypatch.setattr(tmo_double, "moe_softplus_topk", to_host)
    results = check.check_op("moe_route", "mlu", torch.float32)
    assert results and not any(r.passed for r in results)
    assert all("outputs on cpu, cpu, not on mlu" in r.error for r in results)
