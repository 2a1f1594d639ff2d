"""Builds v4_ascend's C++ extensions against the installed torch (use --no-build-isolation).

- ``v4_ascend._C``: CPU kernels, always built (``V4_ASCEND_BUILD_CPU=0`` skips it). Compiled for the
  x86-64 baseline with -O3 and OpenMP; wider ISAs are chosen at run time, never ``-march=native``.
- ``v4_ascend._C_npu``: Ascend glue, built only when CANN and torch_npu are found.
- ``v4_ascend._C_mlu``: Cambricon glue, built only when Neuware and torch_mlu are found.
"""

from __future__ import annotations

import os
from glob import glob

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def cpu_extension():
    return CppExtension(
        "v4_ascend._C",
        sources=sorted(glob("csrc/cpu/*.cpp") + glob("csrc/kernels/*.cpp")),
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": ["-O3", "-std=c++17", "-fopenmp", "-fno-math-errno"]},
        extra_link_args=["-fopenmp"],
    )


def extensions():
    found = []
    if os.environ.get("V4_ASCEND_BUILD_CPU", "1") != "0":
        found.append(cpu_extension())
    for vendor in ("npu", "mlu"):
        print(f"v4_ascend: skipping _C_{vendor}: {vendor_build_skip_reason(vendor)}")
    return found


def vendor_build_skip_reason(vendor: str) -> str:
    if vendor == "npu":
        if not os.environ.get("ASCEND_HOME_PATH"):
            return "CANN not found (ASCEND_HOME_PATH is unset)"
        return "no Ascend glue sources in this release"
    if not os.environ.get("NEUWARE_HOME"):
        return "Neuware not found (NEUWARE_HOME is unset)"
    return "no Cambricon glue sources in this release"


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
