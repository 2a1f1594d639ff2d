"""The Ascend side of the validation kit (``v4-ascend check --device npu``): the report lines a user
pastes with the check results. The process is made strict (torch_npu's CPU fallback an error) by
:func:`v4_ascend.backends.prepare_device`, shared with the Cambricon kit."""

from __future__ import annotations

import os

from v4_ascend.backends.prepare import VENDOR_SETUP

FALLBACK_ENV = VENDOR_SETUP["npu"].env


def summary_lines() -> list[str]:
    """What a user pastes with the check report: SoC, versions, strictness and reference fallbacks."""
    from v4_ascend import backends

    lines = [f"{FALLBACK_ENV}={os.environ.get(FALLBACK_ENV, '<unset>')}"]
    if "npu" not in backends.loaded():
        return lines + [f"npu backend not loaded: {backends.skipped().get('npu', 'not requested')}"]
    from v4_ascend.backends.npu import kernels

    lines.append(
        f"SoC: {kernels.soc().label}; torch_npu {kernels.VENDOR_VERSION}; "
        f"_C_npu glue: {'loaded' if kernels.NATIVE_GMM else 'not built'}"
    )
    return lines + kernels.KERNELS.fallback_lines()
