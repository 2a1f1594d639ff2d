"""The Ascend validation kit makes torch_npu's silent CPU fallback an error before any NPU work."""

from __future__ import annotations

import sys
import types

import pytest

from v4_ascend.backends.npu import kit
from v4_ascend.testing import sim_device

pytestmark = pytest.mark.skipif(sim_device.device() is not None, reason="restart logic is for real devices only")


@pytest.fixture
def execs(monkeypatch):
    calls = []
    monkeypatch.setattr(kit.os, "execv", lambda path, argv: calls.append((path, argv)))
    monkeypatch.delenv(kit.FALLBACK_ENV, raising=False)
    return calls


def test_kit_sets_the_variable_when_torch_npu_is_not_imported_yet(execs, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch_npu", raising=False)
    kit.ensure_cpu_fallback_disabled(["check", "--device", "npu"])
    assert kit.os.environ[kit.FALLBACK_ENV] == "1" and execs == []


def test_kit_restarts_itself_when_torch_npu_was_imported_without_it(execs, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", types.ModuleType("torch_npu"))
    kit.ensure_cpu_fallback_disabled(["check", "--device", "npu:0", "--seed", "3"])
    assert execs == [(sys.executable, [sys.executable, "-m", "v4_ascend.cli", "check", "--device", "npu:0",
                                       "--seed", "3"])]
    assert kit.os.environ[kit.FALLBACK_ENV] == "1"


def test_kit_does_nothing_when_the_variable_is_already_set(execs, monkeypatch):
    monkeypatch.setenv(kit.FALLBACK_ENV, "1")
    monkeypatch.setitem(sys.modules, "torch_npu", types.ModuleType("torch_npu"))
    kit.ensure_cpu_fallback_disabled(["check"])
    assert execs == []
