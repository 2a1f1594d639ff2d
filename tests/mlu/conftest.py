"""Fixtures of the MLU contract tests: the torch_mlu_ops double and the simulated device's arch."""

from __future__ import annotations

import sys

import pytest
import torch


@pytest.fixture
def tmo_double():
    """The torch_mlu_ops test double the backend loaded against, with its call records cleared."""
    double = sys.modules["torch_mlu_ops"]
    double.reset()
    return double


@pytest.fixture
def mlu_arch(monkeypatch):
    """Sets the simulated device's name (hence its arch) for one test: ``mlu_arch("MLU370-X8")``."""

    def set_name(name: str) -> None:
        monkeypatch.setattr(torch.mlu, "get_device_name", lambda index=0: name, raising=False)

    set_name("MLU590-M9")
    return set_name
