"""Cambricon MLU validation kit: v4_ascend's MLU kernels against the reference, on the hardware.

Run it inside the Cambricon container (docs/cambricon.md) on a machine with an MLU:

    python tests/device/mlu_kit.py          # or: pytest tests/device/test_mlu_device.py

What it guarantees about the process it runs in:

- :func:`v4_ascend.backends.prepare_device` (the mechanism behind ``v4-ascend check/bench --device mlu``)
  sets ``ENABLE_FALLBACK_TO_CPU=0`` *before* torch_mlu is imported (restarting the kit once if torch_mlu
  was already imported without it). By default torch_mlu runs aten ops that lack an MLU kernel on the
  CPU (``MLUFallback.cpp``), which would hide a CPU round trip inside our kernels; with the variable at 0
  such an op raises. An existing value is overridden (and reported).
- It then imports torch_mlu, which names PyTorch's PrivateUse1 device ``mlu``, and loads v4_ascend's
  backends again; ``V4_ASCEND_BACKEND=mlu`` turns a backend that cannot load (for example an
  unsupported torch_mlu_ops release) into an error instead of a silent reference run.

Then it prints the versions, the MLU arch and ``backend_report()``, checks that every declared op is
served as the capability table routes it (ops routed to tmo by the mlu backend, the others by the
reference composition, which runs on the MLU), and runs every op, case and dtype against the reference
(``check_all``, which fails any output that is not on the MLU), plus the sparse_attn head counts at and
over tmo's per-call limits and the mHC post swap test at V4-Flash's shape; last, the calls that left a
tmo route for the on-device reference composition, with the reason.

Exit status: 0 all checks passed; 1 a check failed (listed); 2 no MLU here (the reason is printed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

NO_MLU = 2
FAILED = 1


def _no_mlu(reason: str) -> int:
    print(f"no MLU: {reason}")
    return NO_MLU


def main() -> int:
    previous = os.environ.get("ENABLE_FALLBACK_TO_CPU")
    for name in ("V4_ASCEND_SIM_DEVICE", "V4_ASCEND_BACKEND"):  # the real device, and the import must not fail
        os.environ.pop(name, None)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's v4_ascend
    import torch

    import v4_ascend
    from v4_ascend import backends

    os.environ["V4_ASCEND_BACKEND"] = "mlu"  # from here on, an mlu backend that cannot load is an error
    try:  # ENABLE_FALLBACK_TO_CPU=0 before torch_mlu is imported, then the mlu backend loaded
        backends.prepare_device("mlu", sys.argv)
    except backends.VendorModuleMissing as error:
        return _no_mlu(f"{error}; vendor tier skipped")
    except RuntimeError as error:  # V4_ASCEND_BACKEND=mlu and the backend cannot load
        print(f"FAIL: {error}")
        return FAILED
    if not torch.mlu.is_available():
        return _no_mlu("torch_mlu is installed but torch.mlu.is_available() is False")
    from v4_ascend.backends.mlu import capabilities, tmo

    device = torch.device("mlu", 0)
    print(f"ENABLE_FALLBACK_TO_CPU=0 (was {previous!r}); torch {torch.__version__}, torch_mlu "
          f"{tmo.installed_version('torch_mlu')}, torch_mlu_ops {tmo.installed_version(tmo.MODULE)}")
    name = torch.mlu.get_device_name(0)
    print(f"device: {name} (arch {capabilities.arch_from_name(name)})")
    report = v4_ascend.backend_report()
    print(report)
    routed = capabilities.CAPABILITIES.vendor_ops()
    failures = [f"{row.op}: served by {row.backend}, not {want}" for row in report.rows if row.device == "mlu"
                for want in ["mlu" if row.op in routed else "reference"] if row.backend != want]
    failures += _check_cases(device)
    failures += _check_head_limits(device)
    failures += _check_mhc_post_swap(device)
    from v4_ascend.backends.mlu import kernels

    print("\n".join(kernels.KERNELS.fallback_lines()))
    for failure in failures:
        print(f"FAIL: {failure}")
    print("all MLU checks passed" if not failures else f"{len(failures)} MLU check(s) failed")
    return FAILED if failures else 0


def _check_cases(device) -> list[str]:
    from v4_ascend.testing import check

    failures = []
    for result in check.check_all(device):
        print(f"{result.op:<20} {str(result.dtype):<15} {result.case:<28} max|err| {result.max_error:.2e} "
              f"{'ok' if result.passed else 'FAIL ' + result.error}")
        if not result.passed:
            failures.append(f"{result.op} {result.dtype} {result.case} {result.error}".strip())
    return failures


def _check_head_limits(device) -> list[str]:
    """sparse_attn at and over single_query_cached_kv_attn's heads-per-call limits (128, 256 with bf16 KV)."""
    import torch

    from v4_ascend import ops
    from v4_ascend.reference import attention as attn_ref
    from v4_ascend.testing import tolerance

    gen = torch.Generator().manual_seed(0)
    failures = []
    for dtype, heads in ((torch.float16, 128), (torch.float16, 200), (torch.bfloat16, 256), (torch.bfloat16, 300)):
        T, D, N, K = 4, 512, 300, 160
        q = torch.randn(T, heads, D, generator=gen).to(dtype)
        kv = torch.randn(N, D, generator=gen).to(dtype)
        idx = torch.randint(-1, N, (T, K), generator=gen, dtype=torch.int32)
        sink = torch.randn(heads, generator=gen)
        out, lse = ops.sparse_attn(q.to(device), kv.to(device), idx.to(device), sink.to(device), D**-0.5)
        want, want_lse = attn_ref.sparse_attn(q.float(), kv.float(), idx, sink, D**-0.5)
        try:
            tolerance.assert_close(out.cpu(), want, dtype, "out")
            tolerance.assert_close(lse.cpu(), want_lse, dtype, "lse")
        except AssertionError as error:
            failures.append(f"sparse_attn {dtype} H={heads}: {error}")
    return failures


def _check_mhc_post_swap(device) -> list[str]:
    """fused_mhc_post at D = 4096, HC = 4 with a non-symmetric comb: output stream j must take column j."""
    import torch

    from v4_ascend import ops
    from v4_ascend.reference import mhc as mhc_ref
    from v4_ascend.testing import tolerance

    gen = torch.Generator().manual_seed(1)
    T, n, D = 3, 4, 4096
    x = torch.randn(T, n, D, generator=gen).to(torch.bfloat16)
    f = torch.randn(T, D, generator=gen).to(torch.bfloat16)
    post = torch.rand(T, n, generator=gen)
    comb = torch.zeros(T, n, n)
    comb[:, 0, 1] = 1.0  # stream 1 takes stream 0; comb.T would move stream 1 into stream 0 instead
    out = ops.mhc_post(f.to(device), x.to(device), post.to(device), comb.to(device))
    try:
        tolerance.assert_close(out.cpu(), mhc_ref.mhc_post(f, x, post, comb), torch.bfloat16, "out")
    except AssertionError as error:
        return [f"mhc_post swap test (comb orientation): {error}"]
    return []


if __name__ == "__main__":
    sys.exit(main())
