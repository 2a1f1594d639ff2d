#!/usr/bin/env bash
# Compile-and-link check of the Ascend C++ glue (csrc/npu/*.cpp) without CANN and without an NPU.
#
# Downloads the torch-npu wheel matching the installed torch into .cache/torch_npu (pip download
# --no-deps: the wheel is unzipped, NEVER installed, because an installed torch_npu breaks
# `import torch` on a machine without CANN), then compiles the glue against the wheel's bundled
# headers and links it against its libtorch_npu.so and the installed torch with --no-undefined, so
# every symbol the glue uses must be exported by torch_npu or torch. The result is never loaded
# (libtorch_npu.so needs CANN's libhccl/libascendcl). aclnn ops themselves are resolved with dlsym at
# run time, so no CANN symbol is needed at link time.
#
# Usage: tools/check_npu_glue.sh            (PYTHON=... selects the interpreter whose torch is used)
# Exit status: 0 built and linked; 77 the wheel could not be downloaded (no network); other: failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_NPU_VERSION=${TORCH_NPU_VERSION:-$("$PYTHON" -c "import torch; print(torch.__version__.split('+')[0])")}
CACHE=.cache/torch_npu
WHEEL_DIR=$CACHE/$TORCH_NPU_VERSION
OUT=$CACHE/build-$TORCH_NPU_VERSION
mkdir -p "$WHEEL_DIR" "$OUT"

wheel=$(ls "$WHEEL_DIR"/torch_npu-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  if ! "$PYTHON" -m pip download -q --no-deps --only-binary=:all: "torch-npu==$TORCH_NPU_VERSION" -d "$WHEEL_DIR" \
      >"$OUT/download.log" 2>&1; then
    echo "cannot download torch-npu==$TORCH_NPU_VERSION (no network or no such wheel): $(tail -n1 "$OUT/download.log")"
    exit 77
  fi
  wheel=$(ls "$WHEEL_DIR"/torch_npu-*.whl | head -n1)
fi
if [ ! -d "$WHEEL_DIR/unpacked/torch_npu/include" ]; then
  rm -rf "$WHEEL_DIR/unpacked"
  "$PYTHON" -m zipfile -e "$wheel" "$WHEEL_DIR/unpacked"
fi
NPU=$WHEEL_DIR/unpacked/torch_npu

read -r TORCH_LIB CXX11_ABI < <("$PYTHON" -c "import os, torch; \
print(os.path.join(os.path.dirname(torch.__file__), 'lib'), int(torch._C._GLIBCXX_USE_CXX11_ABI))")
mapfile -t TORCH_INCLUDES < <("$PYTHON" -c "import sysconfig, torch.utils.cpp_extension as c; \
print(*c.include_paths(), sysconfig.get_paths()['include'], sep='\n')")
# op-plugin's headers select their torch API with CURRENT_VERSION (V2R13 = torch 2.13), which
# torch_npu's own build defines.
minor=$(echo "$TORCH_NPU_VERSION" | cut -d. -f2)
CXXFLAGS=(-std=c++17 -O1 -fPIC -Wall -Werror -Wno-unused-function -D_GLIBCXX_USE_CXX11_ABI="$CXX11_ABI"
  -DCURRENT_VERSION="V2R$minor" -Icsrc -Icsrc/npu -isystem "$NPU/include" -isystem "$NPU/include/third_party/op-plugin")
for dir in "${TORCH_INCLUDES[@]}"; do CXXFLAGS+=(-isystem "$dir"); done

objects=()
for src in csrc/npu/*.cpp; do
  obj=$OUT/$(basename "${src%.cpp}").o
  g++ "${CXXFLAGS[@]}" -c "$src" -o "$obj"
  objects+=("$obj")
done
g++ -shared "${objects[@]}" -o "$OUT/_C_npu.so" -L"$NPU/lib" -L"$TORCH_LIB" \
  -ltorch_npu -ltorch -ltorch_cpu -lc10 -Wl,--no-undefined
echo "built and linked $OUT/_C_npu.so against torch-npu $TORCH_NPU_VERSION (not loaded: needs CANN)"
