# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TPU_STAMP := $(VENV)/.installed-tpu
# The tpu extra's libtpu probes for TPU chips when jax starts; on a machine with no accelerator
# device node, JAX_PLATFORMS=cpu (unless already set) skips that probe and its warnings.
ACCEL_NODES := $(wildcard /dev/accel* /dev/vfio/[0-9]* /dev/nvidia[0-9]*)
JAX_ENV := $(if $(ACCEL_NODES),,JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu})
DEMO_DIR ?= runs/demo
# Two pytest workers: much of a test's time is single-threaded (XLA compiles, TF and tokenizer
# start-up), so two processes keep both cores busy. Whole files go to one worker so module
# fixtures are built once. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST_PAR := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: setup demo test test-slow bench format clean

setup: $(STAMP)

# torch==2.13.0 first: on these machines that exact pin resolves to the local CPU wheel;
# letting a dependency resolver pick torch would pull the CUDA build.
$(STAMP): setup.cfg setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The tests also compile a train step for a TPU topology (`flaxlm compile`), which needs libtpu.
$(TPU_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,tpu]'
	touch $(TPU_STAMP)

demo: $(STAMP)
	$(JAX_ENV) $(BIN)/python -m flaxlm.demo --workdir $(DEMO_DIR)

test: $(TPU_STAMP)
	$(JAX_ENV) $(BIN)/python -m pytest -q $(PYTEST_PAR) -m "not slow" tests

test-slow: $(TPU_STAMP)
	$(JAX_ENV) $(BIN)/python -m pytest -q $(PYTEST_PAR) -m slow tests

bench: $(STAMP)
	$(JAX_ENV) $(BIN)/python -m benchmarks.run

# The one formatter, configured in setup.cfg ([yapf]); tests/test_format.py fails on unformatted code.
format: $(STAMP)
	$(BIN)/yapf -i -r -p flaxlm benchmarks launch tests configs

clean:
	rm -rf $(VENV) runs
