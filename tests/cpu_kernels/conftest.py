"""Shared fixture of the C++ CPU kernel tests: proof that the C++ kernel, not the reference, served a call."""

from __future__ import annotations

import contextlib

import pytest

from v4_ascend import backends


@pytest.fixture
def served_by_cpp():
    """``with served_by_cpp(op, calls=1): ...`` asserts the C++ kernel of ``op`` ran ``calls`` times inside.

    Skips the test when ``v4_ascend._C`` is not loaded (not built, or another backend selected).
    """
    if "cpu" not in backends.loaded():
        pytest.skip("v4_ascend._C is not loaded in this process (not built, or not selected)")
    extension = backends.module("cpu").extension()

    @contextlib.contextmanager
    def counting(op: str, calls: int = 1):
        assert op in extension.kernel_info(), f"no C++ kernel registered for {op}"
        before = extension.kernel_calls()[op]
        yield
        assert extension.kernel_calls()[op] == before + calls

    return counting
