"""The Ascend side of the validation kit (``v4-ascend check --device npu``).

torch_npu silently falls back to the CPU for an op without an NPU kernel, unless
``TORCH_NPU_FALLBACK_CPU_DISABLE=1`` is set *before torch_npu is imported* (the value is cached at
import, and ``import torch`` already imports torch_npu through its autoload entry point). The kit
therefore sets the variable and, when torch_npu was imported without it, restarts itself once with it
set, so that a missing kernel fails loudly instead of passing on the CPU.
"""

from __future__ import annotations

import os
import sys

from v4_ascend.testing import sim_device

FALLBACK_ENV = "TORCH_NPU_FALLBACK_CPU_DISABLE"


def ensure_cpu_fallback_disabled(cli_args: list[str]) -> None:
    """Make torch_npu's CPU fallback an error for this run; may re-execute ``v4-ascend <cli_args>``."""
    if os.environ.get(FALLBACK_ENV) == "1":
        return
    os.environ[FALLBACK_ENV] = "1"
    if "torch_npu" in sys.modules and sim_device.device() is None:
        os.execv(sys.executable, [sys.executable, "-m", "v4_ascend.cli", *cli_args])


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
