# wsi-tumor: the README names these targets. Each one sets the machine up first (idempotent).
VENV   := .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=
ACCURACY_ARGS ?=
SOAK_ARGS ?=
GPU_PROBE_ARGS ?=
GPU_BUNDLE_ARGS ?=
GPU_SERVE_ARGS ?= --device cpu --tiny

.PHONY: setup test test-e2e lint demo bench accuracy accuracy-ablation soak gpu-probe gpu-bundle gpu-serve-check docs-check clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/mypy

test: lint
	$(PYTHON) -m pytest -m "not e2e" $(PYTEST_ARGS)

test-e2e: setup
	$(PYTHON) -m pytest -m e2e $(PYTEST_ARGS)

demo: setup
	$(PYTHON) -m wsi_tumor.demo $(DEMO_ARGS)

bench: setup
	$(PYTHON) benchmarks/run_benchmarks.py

accuracy: setup
	$(PYTHON) benchmarks/run_accuracy.py $(ACCURACY_ARGS)

accuracy-ablation: setup
	$(PYTHON) benchmarks/run_accuracy.py --ablation $(ACCURACY_ARGS)

docs-check: setup
	$(PYTHON) benchmarks/wsi_bench/figures.py

soak: setup
	$(PYTHON) benchmarks/run_soak.py $(SOAK_ARGS)

gpu-probe: setup
	$(PYTHON) benchmarks/gpu_probe.py $(GPU_PROBE_ARGS)

# The GPU serve check (docs/gpu.md): gpu-bundle builds what a GPU machine lacks for it;
# gpu-serve-check runs every stage here, tiny and on the CPU unless GPU_SERVE_ARGS says more.
gpu-bundle: setup
	$(PYTHON) benchmarks/gpu_bundle.py $(GPU_BUNDLE_ARGS)

gpu-serve-check: setup
	$(PYTHON) benchmarks/gpu_serve.py $(GPU_SERVE_ARGS)

clean:
	rm -rf $(VENV) .triton .gpu-bundle .gpu-bundle-cache .pytest_cache .mypy_cache .ruff_cache demo_output
