"""Backend registry: selection, the C++ override, the extension-less import, one vendor per process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import v4_ascend
from v4_ascend import backends, library

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NEEDS_EXTENSION = pytest.mark.skipif(
    "cpu" not in backends.loaded(), reason="v4_ascend._C is not loaded in this process (not built, or not selected)"
)


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (backend choice happens once per process, at import)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("V4_ASCEND_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=environment, capture_output=True, text=True
    )


@NEEDS_EXTENSION
@pytest.mark.parametrize("op", ["sparse_attn", "grouped_gemm", "grouped_gemm_masked"])
def test_cpp_kernel_overrides_reference_on_cpu(op):
    from v4_ascend.testing import cases

    extension = backends.module("cpu").extension()
    case = cases.generate(op, "cpu", torch.float32)[0]
    before = extension.kernel_calls()[op]
    library.ops()[op].overload(*case.args, **case.kwargs)
    assert extension.kernel_calls()[op] == before + 1
    assert v4_ascend.report.serving_backend(op, "cpu")[0] == "cpu"


def test_reference_backend_serves_everything():
    result = run_python(
        """
        import v4_ascend
        from v4_ascend import backends, library
        assert backends.loaded() == (), backends.loaded()
        rows = v4_ascend.backend_report().rows
        assert {r.backend for r in rows} == {"reference"}, rows
        assert len(rows) == len(library.ops())
        print("ok")
        """,
        V4_ASCEND_BACKEND="reference",
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_import_without_extension_warns_once_and_uses_reference():
    result = run_python(
        """
        import sys, warnings
        sys.modules["v4_ascend._C"] = None  # what an absent extension looks like to the import system
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import v4_ascend
        import torch
        from v4_ascend.testing import cases
        messages = [str(w.message) for w in caught if "v4_ascend" in str(w.message)]
        assert len(messages) == 1 and "_C" in messages[0], messages
        assert "cpu" not in v4_ascend.backends.loaded()
        case = cases.generate("sparse_attn", "cpu", torch.float32)[0]
        v4_ascend.ops.sparse_attn(*case.args, **case.kwargs)
        assert v4_ascend.report.serving_backend("sparse_attn", "cpu")[0] == "reference"
        print("ok")
        """
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_unknown_backend_name_is_an_error_naming_the_variable():
    result = run_python("import v4_ascend", V4_ASCEND_BACKEND="cuda9")
    assert result.returncode != 0
    assert "V4_ASCEND_BACKEND must be one of" in result.stderr


def test_forcing_an_unavailable_backend_says_why():
    result = run_python("import v4_ascend", V4_ASCEND_BACKEND="npu")
    assert result.returncode != 0
    assert "V4_ASCEND_BACKEND=npu, but the npu backend cannot load" in result.stderr
    assert "PrivateUse1" in result.stderr


@pytest.mark.parametrize("device,other", [("npu", "mlu"), ("mlu", "npu")])
def test_a_process_never_loads_two_vendor_backends(device, other):
    result = run_python(
        f"""
        import sys
        sys.path.insert(0, "tests")
        from doubles import install_vendor_doubles
        install_vendor_doubles("{device}")
        install_vendor_doubles("{other}")
        import v4_ascend
        from v4_ascend import backends
        assert "{device}" in backends.loaded(), backends.loaded()
        assert "{other}" not in backends.loaded()
        try:
            backends._activate("{other}", backends.module("{other}"))
        except RuntimeError as error:
            assert "one vendor per process" in str(error)
            print("refused")
        """,
        V4_ASCEND_SIM_DEVICE=device,
    )
    assert result.returncode == 0 and "refused" in result.stdout, result.stderr
