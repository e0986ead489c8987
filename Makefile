# wsi-tumor: the README names these targets. Each one sets the machine up first (idempotent).
VENV   := .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=
ACCURACY_ARGS ?=
SOAK_ARGS ?=
GPU_PROBE_ARGS ?=

.PHONY: setup test lint demo bench accuracy accuracy-ablation soak gpu-probe clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/mypy

test: lint
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PYTHON) -m wsi_tumor.demo $(DEMO_ARGS)

bench: setup
	$(PYTHON) benchmarks/run_benchmarks.py

accuracy: setup
	$(PYTHON) benchmarks/run_accuracy.py $(ACCURACY_ARGS)

accuracy-ablation: setup
	$(PYTHON) benchmarks/run_accuracy.py --ablation $(ACCURACY_ARGS)

soak: setup
	$(PYTHON) benchmarks/run_soak.py $(SOAK_ARGS)

gpu-probe: setup
	$(PYTHON) benchmarks/gpu_probe.py $(GPU_PROBE_ARGS)

clean:
	rm -rf $(VENV) .triton .pytest_cache .mypy_cache .ruff_cache demo_output
