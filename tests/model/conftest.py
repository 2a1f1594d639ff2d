"""Shared fixtures of the model tests: one tiny checkpoint per session, written by the official-format writer."""

from __future__ import annotations

import pytest

from v4_ascend.model.checkpoint import write_checkpoint
from v4_ascend.model.config import TINY


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Directory of the TINY checkpoint (seed 0, 2 shards + index + config.json)."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", TINY, seed=0, shards=2)
