"""The torch_mlu_ops adapter's version pins (plain run): unsupported releases give a clear reason."""

from __future__ import annotations

import pytest

from v4_ascend.backends.mlu import tmo


@pytest.mark.parametrize(
    "tmo_version, torch_mlu, torch_version",
    [("1.13.0", None, "2.13.0+cpu"), ("1.13.2+mlu", "1.34.1", "2.13.0"), ("v1.13.1", "1.34.1-torch2.13.0", "2.13.0")],
)
def test_supported_releases_pass(tmo_version, torch_mlu, torch_version):
    assert tmo.check_versions(tmo_version, torch_mlu, torch_version) is None


@pytest.mark.parametrize(
    "tmo_version, torch_mlu, torch_version, named",
    [
        ("1.12.0", None, "2.13.0", "torch_mlu_ops 1.12.0"),
        ("1.14.0", "1.34.1", "2.13.0", "torch_mlu_ops 1.14.0"),
        ("1.1.3", None, "2.13.0", "torch_mlu_ops 1.1.3"),  # a prefix match on text would accept it
        ("1.13.0", "1.30.2", "2.13.0", "torch_mlu 1.30.2"),
        ("1.13.0", "1.34.1", "2.9.1", "torch 2.9.1"),
        ("garbage", None, "2.13.0", "torch_mlu_ops garbage"),
    ],
)
def test_unsupported_releases_are_named_with_the_supported_set(tmo_version, torch_mlu, torch_version, named):
    reason = tmo.check_versions(tmo_version, torch_mlu, torch_version)
    assert reason is not None and f"unsupported {named}" in reason
    assert "torch_mlu_ops 1.13.x with torch_mlu 1.34.1 and torch 2.13.0" in reason
    assert "docs/cambricon.md" in reason


def test_unreadable_version_is_a_reason():
    assert "cannot read the torch_mlu_ops version" in tmo.check_versions(None, None, "2.13.0")


def test_installed_version_of_a_missing_package_is_none():
    assert tmo.installed_version("v4_ascend_no_such_package") is None
