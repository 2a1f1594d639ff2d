"""Builds v4_ascend's C++ extensions against the installed torch (use --no-build-isolation).

- ``v4_ascend._C``: CPU kernels, always built (``V4_ASCEND_BUILD_CPU=0`` skips it). Compiled for the
  x86-64 baseline with -O3 and OpenMP; wider ISAs are chosen at run time, never ``-march=native``.
- ``v4_ascend._C_npu``: Ascend aclnn glue (``csrc/npu``), built only when CANN (``ASCEND_HOME_PATH``) and
  torch_npu are found (``V4_ASCEND_BUILD_NPU=0`` skips it). ``tools/check_npu_glue.sh`` compiles and links
  the same sources without CANN.
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


def npu_extension(torch_npu_dir: str):
    """The aclnn glue of csrc/npu, against torch_npu's bundled headers (same flags as tools/check_npu_glue.sh)."""
    import torch

    minor = torch.__version__.split(".")[1]
    return CppExtension(
        "v4_ascend._C_npu",
        sources=sorted(glob("csrc/npu/*.cpp")),
        include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(torch_npu_dir, "include"),
                      os.path.join(torch_npu_dir, "include", "third_party", "op-plugin")],
        define_macros=[("CURRENT_VERSION", f"V2R{minor}")],  # op-plugin headers' torch-API switch
        library_dirs=[os.path.join(torch_npu_dir, "lib")],
        libraries=["torch_npu"],
        extra_compile_args={"cxx": ["-O2", "-std=c++17"]},
    )


def extensions():
    found = []
    if os.environ.get("V4_ASCEND_BUILD_CPU", "1") != "0":
        found.append(cpu_extension())
    reason = vendor_build_skip_reason("npu")
    if reason is None:
        found.append(npu_extension(torch_npu_dir()))
    else:
        print(f"v4_ascend: skipping _C_npu: {reason}")
    print(f"v4_ascend: skipping _C_mlu: {vendor_build_skip_reason('mlu')}")
    return found


def torch_npu_dir() -> str | None:
    """torch_npu's package folder, found without importing it (the import needs CANN's libraries)."""
    import importlib.util

    spec = importlib.util.find_spec("torch_npu")
    return None if spec is None or spec.origin is None else os.path.dirname(spec.origin)


def vendor_build_skip_reason(vendor: str) -> str | None:
    if vendor == "npu":
        if os.environ.get("V4_ASCEND_BUILD_NPU", "1") == "0":
            return "V4_ASCEND_BUILD_NPU=0"
        if not os.environ.get("ASCEND_HOME_PATH"):
            return "CANN not found (ASCEND_HOME_PATH is unset)"
        if torch_npu_dir() is None:
            return "torch_npu is not installed (pip install torch-npu==<torch version>)"
        return None
    if not os.environ.get("NEUWARE_HOME"):
        return "Neuware not found (NEUWARE_HOME is unset)"
    return "no Cambricon glue sources in this release"


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
