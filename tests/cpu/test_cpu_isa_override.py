"""Every ISA body of the C++ kernels runs on this CPU: ``V4_ASCEND_CPU_ISA`` lowers the ISA the kernels
dispatch on. The choice is read once per process, so each level below the detected one (which the other
tests cover in-process) runs in a subprocess: all of sparse_attn's kernel tests (its AVX2 and portable
kernels), and a smoke of every other C++ kernel (``v4-ascend check`` compares each against its
reference on the registered cases).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from v4_ascend.backends import cpu

pytestmark = pytest.mark.skipif(cpu.unavailable_reason() is not None, reason="v4_ascend._C is not built")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEVELS = ("baseline", "avx2", "avx512")
LOWER = LEVELS[:-1]  # AVX-512 is what this suite runs in-process on an AVX-512 CPU
VARIABLE = "V4_ASCEND_CPU_ISA"


def run_under(isa: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, VARIABLE: isa, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def supported(isa: str) -> bool:
    return LEVELS.index(isa) <= LEVELS.index(cpu.extension().cpu_isa_detected())


@pytest.mark.parametrize("isa", LOWER)
def test_sparse_attn_kernel_tests_pass_under_each_isa(isa):
    if not supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    result = run_under(isa, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                       "tests/cpu/test_sparse_attn_kernel.py")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"cpu_isa={isa}" in result.stdout  # printed by the child's test_reports_the_chosen_isa


@pytest.mark.parametrize("isa", LOWER)
def test_every_cpp_kernel_matches_its_reference_under_each_isa(isa):
    if not supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    ops = sorted(set(cpu.extension().kernel_info()) - {"sparse_attn"})  # sparse_attn: the test above
    result = run_under(isa, "-m", "v4_ascend.cli", "check", "--device", "cpu", *(f"--op={op}" for op in ops))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_an_unknown_name_fails_at_import_naming_the_variable():
    result = run_under("sse9", "-c", "import v4_ascend")
    assert result.returncode != 0
    assert f"{VARIABLE}=sse9: unknown ISA" in result.stderr and "ValueError" in result.stderr


def test_a_level_above_the_cpu_fails_at_import():
    above = [isa for isa in LEVELS if not supported(isa)]
    if not above:
        pytest.skip("this CPU has every level (the C++ unit tests cover the refusal)")
    result = run_under(above[0], "-c", "import v4_ascend")
    assert result.returncode != 0 and VARIABLE in result.stderr and "can only lower" in result.stderr
