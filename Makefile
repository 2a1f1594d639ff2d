# Two entry points do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.v4_ascend-installed
SOURCES := pyproject.toml setup.py $(shell find csrc -type f 2>/dev/null)
PYTEST := OMP_NUM_THREADS=1 tools/run-pytest $(BIN)/python

.PHONY: setup run test lint cpp-test clean

setup: $(STAMP)

$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION) setuptools wheel ninja
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[dev]"
	touch $@

run: setup
	$(BIN)/v4-ascend run --tiny
	$(BIN)/v4-ascend info
	$(BIN)/v4-ascend check

lint: setup
	$(BIN)/ruff check .

# The torch-free kernel cores on their own: every header compiles without torch; C++ unit tests.
cpp-test:
	cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build build/cmake -j2
	ctest --test-dir build/cmake --output-on-failure

# The suite runs once plain, then once per simulated vendor device (one PrivateUse1 name per process).
test: lint cpp-test
	$(PYTEST)
	V4_ASCEND_SIM_DEVICE=npu $(PYTEST) -m "device or contract"
	V4_ASCEND_SIM_DEVICE=mlu $(PYTEST) -m "device or contract"

clean:
	rm -rf build $(VENV) *.egg-info v4_ascend/*.so
