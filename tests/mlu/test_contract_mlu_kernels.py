"""Contract tests of the MLU kernels: on the simulated ``mlu`` device our PrivateUse1 kernels call the
torch_mlu_ops double (documented semantics, tests/doubles/torch_mlu_ops.py); these tests assert the
argument mapping of every tmo call and compare results with the reference. They prove our glue, not
tmo's numerics (that is tests/device/test_mlu_device.py, on hardware)."""

from __future__ import annotations

import pytest
import torch
from doubles import contract_marks

from v4_ascend import ops
from v4_ascend.reference import attention as attn_ref
from v4_ascend.reference import mhc as mhc_ref
from v4_ascend.reference import moe as moe_ref
from v4_ascend.testing import cases, tolerance

pytestmark = contract_marks("mlu")

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MLU = "mlu"  # a string: torch.device("mlu") only exists in the simulated-mlu process


def _only_call(double, op):
    """The single recorded call of ``op``: its keyword arguments (every tmo call must be by keyword)."""
    assert double.calls[op] == 1, dict(double.calls)
    args, kwargs = double.history[op][0]
    assert args == (), f"{op} must be called by keyword"
    return kwargs


def _assert_matches_reference(op_fn, reference, args, dtype, kwargs=None):
    kwargs = kwargs or {}
    got = op_fn(*args, **kwargs)
    want = reference(*tolerance.upcast(args), **tolerance.upcast(kwargs))
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want):
        assert g.device.type == MLU
        tolerance.assert_close(g.cpu(), w, dtype)
    return got


@pytest.mark.parametrize("dtype", DTYPES)
def test_contract_grouped_gemm_maps_offsets_to_group_gemm_counts(tmo_double, mlu_arch, dtype, seed):
    for case in cases.generate("grouped_gemm", MLU, dtype, seed):
        tmo_double.reset()
        x, w, offsets = case.args
        (y,) = _assert_matches_reference(ops.grouped_gemm, moe_ref.grouped_gemm, case.args, dtype)
        kw = _only_call(tmo_double, "group_gemm")
        assert kw["a"] is x and kw["b"] is w
        host = offsets.cpu().long()
        counts = torch.cat([host[:1], host[1:] - host[:-1]])
        assert torch.equal(kw["m_list"].cpu(), counts.int()) and kw["m_list"].dtype == torch.int32
        assert kw["max_m"] >= int(counts.max())
        # The double leaves rows past offsets[-1] NaN (tmo does not write them): the kernel zeroes them.
        assert torch.equal(y.cpu()[int(host[-1]):], torch.zeros_like(y.cpu()[int(host[-1]):]))


def test_contract_grouped_gemm_rejects_bad_offsets_before_calling_tmo(tmo_double, mlu_arch):
    x = torch.randn(6, 8).to(MLU)
    w = torch.randn(2, 4, 8).to(MLU)
    for bad in ([4, 2], [3, 7]):
        with pytest.raises(ValueError, match="grouped_gemm: 'offsets'"):
            ops.grouped_gemm(x, w, torch.tensor(bad, dtype=torch.int32).to(MLU))
    assert tmo_double.calls["group_gemm"] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_contract_grouped_gemm_masked_runs_padded_groups_and_zeroes_the_padding(tmo_double, mlu_arch, dtype, seed):
    for case in cases.generate("grouped_gemm_masked", MLU, dtype, seed):
        tmo_double.reset()
        x, w, counts = case.args
        G, Mmax, K = x.shape
        (y,) = _assert_matches_reference(ops.grouped_gemm_masked, moe_ref.grouped_gemm_masked, case.args, dtype)
        kw = _only_call(tmo_double, "group_gemm")
        assert kw["a"].shape == (G * Mmax, K) and kw["b"] is w and kw["max_m"] == Mmax
        assert torch.equal(kw["m_list"].cpu(), torch.full((G,), Mmax, dtype=torch.int32))
        padded = torch.arange(Mmax)[None, :] >= counts.cpu()[:, None]
        assert bool((y.cpu()[padded] == 0).all())


def test_contract_grouped_gemm_masked_rejects_counts_out_of_range(tmo_double, mlu_arch):
    x, w = torch.randn(2, 3, 8).to(MLU), torch.randn(2, 4, 8).to(MLU)
    with pytest.raises(ValueError, match="grouped_gemm_masked: 'counts'"):
        ops.grouped_gemm_masked(x, w, torch.tensor([1, 4], dtype=torch.int32).to(MLU))
    assert tmo_double.calls["group_gemm"] == 0


def _valid_slots(idx, length):
    """Host: per row, the sorted valid entries (independent of the kernel's compaction)."""
    idx = idx.cpu()
    rows = []
    for t in range(idx.shape[0]):
        width = idx.shape[1] if length is None else int(length.cpu()[t])
        rows.append(sorted(int(i) for i in idx[t, :width] if i >= 0))
    return rows


def _assert_paged_call(kw, pool, idx, length, sink, scale):
    """One single_query_cached_kv_attn call: block_size-1 view of ``pool``, compacted table, right sink."""
    T, D = idx.shape[0], pool.shape[1]
    assert kw["k_cache"].shape == (pool.shape[0], 1, 1, D) and kw["v_cache"] is None and kw["head_size_v"] == D
    assert torch.equal(kw["k_cache"].cpu().view(-1, D), pool.cpu())
    assert kw["q"].shape[:2] == (T, 1) and kw["softmax_scale"] == scale and kw["return_lse"] is True
    assert kw["windows_size_left"] == -1 and kw["max_context_len"] == idx.shape[1]
    table, context = kw["block_tables"].cpu(), kw["context_lens"].cpu()
    assert table.dtype == torch.int32 and context.dtype == torch.int32 and table.shape == idx.shape
    expected = _valid_slots(idx, length)
    assert context.tolist() == [len(row) for row in expected]
    assert [sorted(table[t, :n].tolist()) for t, n in enumerate(context.tolist())] == expected
    if sink is None:
        assert kw["learnable_sink"] is None
    else:
        assert torch.equal(kw["learnable_sink"].cpu(), sink.cpu())


@pytest.mark.parametrize("dtype", DTYPES)
def test_contract_sparse_attn_uses_single_query_cached_kv_attn_per_pool(tmo_double, mlu_arch, dtype, seed):
    for case in cases.generate("sparse_attn", MLU, dtype, seed):
        tmo_double.reset()
        q, kv, idx, sink, scale = case.args
        out, lse = _assert_matches_reference(ops.sparse_attn, attn_ref.sparse_attn, case.args, dtype, case.kwargs)
        calls = tmo_double.history["single_query_cached_kv_attn"]
        extra = case.kwargs.get("extra_kv")
        assert len(calls) == (1 if extra is None else 2), case.name
        assert all(args == () for args, _ in calls), "single_query_cached_kv_attn must be called by keyword"
        _assert_paged_call(calls[0][1], kv, idx, case.kwargs.get("topk_length"), sink, scale)
        if extra is not None:  # the second pool: no sink (it is counted once), merged by LSE
            _assert_paged_call(
                calls[1][1], extra, case.kwargs["extra_idx"], case.kwargs.get("extra_topk_length"), None, scale
            )
        # The double leaves empty rows NaN (undefined in tmo): the kernel sets out 0 / lse -inf.
        assert not torch.isnan(out.cpu()).any() and not torch.isnan(lse.cpu()).any()


@pytest.mark.parametrize("dtype, calls", [(torch.float16, 2), (torch.float32, 2), (torch.bfloat16, 1)])
def test_contract_sparse_attn_splits_heads_over_the_limit_keeping_the_sink(tmo_double, mlu_arch, dtype, calls):
    T, H, D, N, K = 3, 200, 16, 9, 5
    q = torch.randn(T, H, D).to(dtype).to(MLU)
    kv = torch.randn(N, D).to(dtype).to(MLU)
    idx = torch.randint(-1, N, (T, K), dtype=torch.int32).to(MLU)
    sink = (torch.randn(H) * 2).to(MLU)
    _assert_matches_reference(ops.sparse_attn, attn_ref.sparse_attn, (q, kv, idx, sink, D**-0.5), dtype)
    history = tmo_double.history["single_query_cached_kv_attn"]
    assert len(history) == calls
    heads = [kw["q"].shape[2] for _, kw in history]
    assert heads == ([128, 72] if calls == 2 else [200])
    assert torch.equal(torch.cat([kw["learnable_sink"].cpu() for _, kw in history]), sink.cpu())


def test_contract_sparse_attn_fp64_runs_the_reference_on_the_device(tmo_double, mlu_arch):
    case = cases.generate("sparse_attn", MLU, torch.float64, 1)[2]
    _assert_matches_reference(ops.sparse_attn, attn_ref.sparse_attn, case.args, torch.float64, case.kwargs)
    assert tmo_double.calls["single_query_cached_kv_attn"] == 0


def test_contract_sparse_attn_rejects_out_of_range_indices_before_calling_tmo(tmo_double, mlu_arch):
    q, kv = torch.randn(2, 2, 8).to(MLU), torch.randn(4, 8).to(MLU)
    idx = torch.tensor([[0, 4], [1, -1]], dtype=torch.int32).to(MLU)
    with pytest.raises(ValueError, match="sparse_attn: 'idx'"):
        ops.sparse_attn(q, kv, idx, None, 0.5)
    length = torch.tensor([3, 1], dtype=torch.int32).to(MLU)
    with pytest.raises(ValueError, match="sparse_attn: 'topk_length'"):
        ops.sparse_attn(q, kv, idx.clamp(max=3), None, 0.5, topk_length=length)
    assert tmo_double.calls["single_query_cached_kv_attn"] == 0


REFERENCES = {"sparse_attn": attn_ref.sparse_attn, "grouped_gemm": moe_ref.grouped_gemm,
              "grouped_gemm_masked": moe_ref.grouped_gemm_masked, "moe_route": moe_ref.moe_route,
              "mhc_pre": mhc_ref.mhc_pre, "mhc_post": mhc_ref.mhc_post}


@pytest.mark.parametrize("op", sorted(REFERENCES))
def test_contract_mlu370_runs_the_reference_composition_on_the_device(tmo_double, mlu_arch, op, seed):
    mlu_arch("MLU370-X8")
    reference = REFERENCES[op]
    for case in cases.generate(op, MLU, torch.float32, seed):
        _assert_matches_reference(getattr(ops, op), reference, case.args, torch.float32, case.kwargs)
    assert sum(tmo_double.calls.values()) == 0


@pytest.mark.parametrize("op", ["sparse_attn", "grouped_gemm", "grouped_gemm_masked", "moe_route", "mhc_pre"])
def test_contract_mlu_kernels_leave_their_inputs_unchanged(tmo_double, mlu_arch, op, seed):
    """The schemas declare no mutation: the kernels (and the tmo calls they make) must not write inputs."""
    dtype = torch.float32 if op == "moe_route" else torch.bfloat16
    for case in cases.generate(op, MLU, dtype, seed):
        inputs = [x for x in (*case.args, *case.kwargs.values()) if isinstance(x, torch.Tensor)]
        before = [x.cpu().clone() for x in inputs]
        getattr(ops, op)(*case.args, **case.kwargs)
        assert all(torch.equal(x.cpu(), b) for x, b in zip(inputs, before)), case.name
    assert sum(tmo_double.calls.values()) > 0


# ---- moe_route -> moe_softplus_topk -------------------------------------------------------------------

def test_contract_moe_route_calls_moe_softplus_topk_by_keyword_and_matches_bit_exactly(tmo_double, mlu_arch, seed):
    for case in cases.generate("moe_route", MLU, torch.float32, seed):
        tmo_double.reset()
        logits, topk, route_scale, *rest = case.args
        bias, token_ids, tid2eid = (*rest, None, None, None)[:3]
        weights, experts = ops.moe_route(*case.args)
        want_weights, want_experts = moe_ref.moe_route(*(a.cpu() if isinstance(a, torch.Tensor) else a
                                                         for a in case.args))
        assert torch.equal(experts.cpu(), want_experts), case.name  # incl. the tie case: lower index first
        tolerance.assert_close(weights.cpu(), want_weights, torch.float32)
        assert weights.device.type == MLU and weights.dtype == torch.float32 and experts.dtype == torch.int32
        kw = _only_call(tmo_double, "moe_softplus_topk")
        assert kw["input"] is logits and kw["topk"] == topk and kw["route_scale"] == route_scale
        if bias is None:
            assert kw["bias"] is None
        else:
            assert kw["bias"] is bias
        if tid2eid is None:
            assert kw["input_ids"] is None and kw["tid2eid"] is None
        else:
            assert kw["input_ids"].dtype == torch.int32 and kw["tid2eid"].dtype == torch.int32
            assert torch.equal(kw["input_ids"].cpu().long(), token_ids.cpu().long())
            assert torch.equal(kw["tid2eid"].cpu(), tid2eid.cpu().int())


def test_contract_moe_route_rejects_out_of_range_hash_ids_before_calling_tmo(tmo_double, mlu_arch):
    logits = torch.randn(2, 8).to(MLU)
    tid2eid = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32).to(MLU)
    with pytest.raises(ValueError, match="moe_route: 'token_ids'"):
        ops.moe_route(logits, 2, 1.0, None, torch.tensor([0, 2]).to(MLU), tid2eid)
    with pytest.raises(ValueError, match="moe_route: 'tid2eid'"):
        ops.moe_route(logits, 2, 1.0, None, torch.tensor([0, 1]).to(MLU), tid2eid + 6)
    assert tmo_double.calls["moe_softplus_topk"] == 0


def test_contract_moe_route_fp64_runs_the_reference_on_the_device(tmo_double, mlu_arch):
    logits = torch.randn(3, 16, dtype=torch.float64)
    weights, experts = ops.moe_route(logits.to(MLU), 4, 1.5)
    want_weights, want_experts = moe_ref.moe_route(logits, 4, 1.5)
    assert weights.device.type == MLU and torch.equal(experts.cpu(), want_experts)
    torch.testing.assert_close(weights.cpu(), want_weights)
    assert tmo_double.calls["moe_softplus_topk"] == 0


# ---- mhc_pre -> hc_split_sinkhorn, mhc_post -> fused_mhc_post -------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_contract_mhc_pre_composes_the_mixes_around_hc_split_sinkhorn(tmo_double, mlu_arch, dtype, seed):
    served = 0
    for case in cases.generate("mhc_pre", MLU, dtype, seed):
        tmo_double.reset()
        x, fn, scale, base, iters, norm_eps, hc_eps = case.args
        _assert_matches_reference(ops.mhc_pre, mhc_ref.mhc_pre, case.args, dtype)
        if x.shape[1] != 4 or x.shape[0] == 0:  # hc_split_sinkhorn: hc_mult = 4 only, and some tokens
            assert tmo_double.calls["hc_split_sinkhorn"] == 0, case.name
            continue
        served += 1
        kw = _only_call(tmo_double, "hc_split_sinkhorn")
        T, n, D = x.shape
        assert kw["hc_mult"] == n and kw["sinkhorn_iter"] == iters and kw["eps"] == hc_eps
        assert kw["mixes"].shape == (T, (2 + n) * n) and kw["mixes"].dtype == torch.float32
        assert torch.equal(kw["hc_scale"].cpu(), scale.cpu().float()) and kw["pre_scale"] is None
        # The mixes are V4's normalised GEMM, recomputed here in fp64 (independent of the kernel).
        flat = x.cpu().double().flatten(1)
        mixes = flat @ fn.cpu().double().T / flat.square().mean(dim=1, keepdim=True).add(norm_eps).sqrt()
        torch.testing.assert_close(kw["mixes"].cpu().double(), mixes, atol=1e-4, rtol=1e-4)
    assert served, "no n = 4 case reached hc_split_sinkhorn"


def _mhc_post_inputs(dtype, T=3, n=4, D=4096):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(T, n, D, generator=gen).to(dtype)
    f = torch.randn(T, D, generator=gen).to(dtype)
    post = torch.rand(T, n, generator=gen) * 2
    comb = torch.rand(T, n, n, generator=gen)
    return f, x, post, comb


@pytest.mark.parametrize("dtype", DTYPES)
def test_contract_mhc_post_maps_onto_fused_mhc_post_at_v4_flash_shape(tmo_double, mlu_arch, dtype):
    args = _mhc_post_inputs(dtype)
    f, x, post, comb = (a.to(MLU) for a in args)
    _assert_matches_reference(ops.mhc_post, mhc_ref.mhc_post, (f, x, post, comb), dtype)
    kw = _only_call(tmo_double, "fused_mhc_post")
    assert kw["x"] is f and kw["residual"] is x and kw["compute_rms"] is False
    assert kw["post"].dtype == torch.float32 and kw["comb"].dtype == torch.float32
    assert torch.equal(kw["comb"].cpu(), comb.cpu()), "comb goes in untransposed"


def test_contract_mhc_post_swap_test_output_stream_j_takes_column_j(tmo_double, mlu_arch):
    f, x, post, _ = _mhc_post_inputs(torch.float32)
    comb = torch.zeros(3, 4, 4)
    comb[:, 0, 1] = 1.0  # only stream 0 feeds output stream 1
    out = ops.mhc_post(f.to(MLU), x.to(MLU), torch.zeros(3, 4).to(MLU), comb.to(MLU)).cpu()
    assert torch.equal(out[:, 1], x[:, 0]) and torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))
    assert tmo_double.calls["fused_mhc_post"] == 1
    del post


def test_contract_mhc_post_outside_v4_flash_shape_runs_the_reference_on_the_device(tmo_double, mlu_arch):
    for n, D in ((4, 7168), (6, 4096), (4, 64)):
        args = tuple(a.to(MLU) for a in _mhc_post_inputs(torch.bfloat16, T=2, n=n, D=D))
        _assert_matches_reference(ops.mhc_post, mhc_ref.mhc_post, args, torch.bfloat16)
    assert tmo_double.calls["fused_mhc_post"] == 0
