"""The benchmark suite runs end to end on the device under test (a smoke test: timings are never asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from v4_ascend import bench
from v4_ascend.backends import privateuse1_name
from v4_ascend.bench import dispatch as dispatch_cases
from v4_ascend.bench import engram as engram_cases
from v4_ascend.bench import harness
from v4_ascend.bench import model_decode as model_decode_cases
from v4_ascend.bench import sparse_attn as sparse_attn_cases
from v4_ascend.cli import main
from v4_ascend.report import serving_backend
from v4_ascend.testing import tolerance


@pytest.mark.device
@pytest.mark.skipif(
    privateuse1_name() == "mlu",
    reason="the torch_mlu_ops test double serves sparse_attn token by token in Python (about 2 minutes for the "
    "quick suite); the bench's device path is covered by the simulated npu run",
)
def test_quick_sparse_attn_bench_writes_json_lines(tmp_path, device, capsys):
    """In this process, so the simulated device keeps its vendor test double (and its kernels)."""
    out = tmp_path / "bench.jsonl"
    status = main(["bench", "--quick", "--op", "sparse_attn", "--device", device.type, "--json", str(out),
                   "--plot", str(tmp_path / "speedup.png")])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "ceilings" in printed and "geomean" in printed
    try:
        import matplotlib  # noqa: F401  (the [bench] extra)
    except ImportError:
        assert "matplotlib is not installed" in printed
    else:
        assert "plot written" in printed
        assert (tmp_path / "speedup.png").read_bytes().startswith(b"\x89PNG")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    quick_cases = {case.name for case in bench.cases(["sparse_attn"], quick=True)}
    assert {r["case"] for r in records} == quick_cases
    for record in records:
        assert record["op"] == "sparse_attn" and record["threads"] == 1
        assert record["backend"] == serving_backend("sparse_attn", device.type)[0]
        assert record["baseline"].startswith("peer")
        assert len(record["kernel_s"]["all"]) >= 5 and record["ratio"] > 0 and record["gflops"] > 0
        assert {"torch", "cpu", "ceilings", "fraction_of_ceiling"} <= record.keys()


@pytest.mark.parametrize("option", ["--json", "--markdown", "--plot"])
def test_an_output_in_a_missing_folder_is_refused_before_measuring(tmp_path, capsys, option):
    status = main(["bench", "--quick", "--op", "moe_route", option, str(tmp_path / "missing" / "out")])
    printed = capsys.readouterr().out
    assert status == 2 and f"the folder of {option}" in printed and "ceilings" not in printed


def test_unknown_op_is_refused():
    with pytest.raises(ValueError, match="no_such_op"):
        bench.cases(["no_such_op"])


def test_every_case_names_a_production_or_small_shape_and_a_baseline():
    names = [(case.op, case.name, case.dtype) for case in bench.cases()]
    assert len(names) == len(set(names))
    assert {case.op for case in bench.cases()} == {
        "sparse_attn", "grouped_gemm", "grouped_gemm_masked", "kv_compress", "indexer_topk", "engram_lookup",
        "engram_hash_lookup", "mhc_pre", "mhc_post", "moe_route", "dispatch_overhead", "model_decode"}
    assert bench.cases(quick=True) and set(bench.cases(quick=True)) < set(bench.cases())
    # every op keeps a --quick case, so that each one is smoke-tested
    assert {case.op for case in bench.cases(quick=True)} == {case.op for case in bench.cases()}


NEW_OPS = ("kv_compress", "indexer_topk", "engram_lookup", "engram_hash_lookup", "mhc_pre",
           "mhc_post", "moe_route", "dispatch_overhead")


def test_quick_bench_of_the_other_ops_runs_and_reports_each(tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    markdown = tmp_path / "tables.md"
    status = main(["bench", "--quick", *(arg for op in NEW_OPS for arg in ("--op", op)), "--json", str(out),
                   "--markdown", str(markdown)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["op"] for r in records} == set(NEW_OPS)
    tables = markdown.read_text()
    for op in NEW_OPS:  # one Markdown table per op, each with its rows and its geomean
        assert f"#### {op} (served by: cpu)" in tables
    assert tables.count("**geomean**") == len(NEW_OPS)
    assert sum(line.startswith("| ") and "geomean" not in line for line in tables.splitlines()) == \
        len(records) + len(NEW_OPS)  # rows + one header line per table
    for record in records:
        assert record["ratio"] > 0 and len(record["kernel_s"]["all"]) >= 5
        rated = record["gbps"] or record["gflops"]
        assert rated > 0 if record["op"] != "dispatch_overhead" else rated is None


def test_quick_model_decode_times_both_backends_in_their_own_workers(tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    status = main(["bench", "--quick", "--op", "model_decode", "--json", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["backend"] == "cpu" and record["baseline"] == "reference backend (own process)"
    assert record["ratio"] > 0 and record["kernel_peak_bytes"] is None  # other processes: not measured here


def test_model_decode_is_not_timed_with_the_cpu_clock_of_this_process(tmp_path, capsys):
    status = main(["bench", "--quick", "--op", "model_decode", "--clock", "cpu"])
    printed = capsys.readouterr().out
    assert status == 0 and "not run with --clock cpu" in printed and "tiny-b4" not in printed.split("ceilings used")[1]


def test_model_decode_worker_failure_is_reported(tmp_path):
    with pytest.raises(RuntimeError, match="reference worker answered"):
        model_decode_cases.DecodeWorker(str(tmp_path / "missing"), "reference", torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("fp8", [False, True], ids=["bf16", "fp8"])
@pytest.mark.parametrize("with_hash", [False, True], ids=["lookup", "hash-and-lookup"])
def test_engram_peer_gathers_and_dequantises_the_same_rows(fp8, with_hash):
    work = engram_cases.lookup(torch.device("cpu"), fp8=fp8, tokens=16, with_hash=with_hash, table_bytes=1 << 20)
    (peer,) = work.baselines.values()
    assert torch.equal(peer(), work.kernel())


@pytest.mark.parametrize("fp8", [False, True], ids=["bf16", "fp8"])
def test_engram_fused_case_equals_its_peer_and_the_two_ops(fp8):
    work = engram_cases.lookup(torch.device("cpu"), fp8=fp8, tokens=16, with_hash=True, fused=True,
                               table_bytes=1 << 20)
    assert len(work.baselines) == 2
    for baseline in work.baselines.values():
        assert torch.equal(baseline(), work.kernel())


@pytest.mark.parametrize("op", ["moe_route", "mhc_post", "engram_hash", "sparse_attn", "grouped_gemm"])
def test_dispatch_peer_wraps_the_same_op(op):
    args = dispatch_cases._tiny_args(op, torch.device("cpu"))
    direct, wrapped = getattr(torch.ops.v4_ascend, op).default(*args), dispatch_cases._wrapped()[op](*args)
    for got, want in zip(torch.utils._pytree.tree_leaves(wrapped), torch.utils._pytree.tree_leaves(direct)):
        assert torch.equal(got, want)


def test_alternating_timer_runs_every_contender_reps_times_plus_warmup():
    calls = {"a": 0, "b": 0}

    def count(name):
        calls[name] += 1

    timings = harness.time_alternating({"a": lambda: count("a"), "b": lambda: count("b")}, lambda: None, 5)
    assert calls == {"a": 6, "b": 6}
    assert all(len(t.seconds) == 5 and t.min <= t.median for t in timings.values())
    assert harness.geomean([2.0, 8.0]) == pytest.approx(4.0)


@pytest.mark.parametrize("hca", [False, True], ids=["csa", "hca"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_decode_peer_computes_the_same_attention(hca, dtype):
    # A speedup over a peer only means something if the peer computes the same thing.
    work = sparse_attn_cases.decode(torch.device("cpu"), dtype=dtype, batch=2, n_c=1024, hca=hca)
    kernel_out, _ = work.kernel()
    for peer in work.baselines.values():
        tolerance.assert_close(peer(), kernel_out.float(), dtype, "peer vs kernel")


def test_peak_growth_sees_a_large_temporary_allocation():
    cpu = torch.device("cpu")
    grown = harness.peak_growth(lambda: torch.ones(16 << 20), cpu)  # 64 MiB, touched, then freed
    if grown is None:
        pytest.skip("peak memory is only measured on Linux")
    assert grown >= 60 * 2**20
    assert harness.peak_growth(lambda: None, cpu) < 8 * 2**20
    assert harness.peak_growth(lambda: None, torch.device("meta")) is None
