# wsi-tumor: the README names these targets. Each one sets the machine up first (idempotent).
VENV   := .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup test lint demo bench clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check
	$(VENV)/bin/mypy

test: lint
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PYTHON) -m wsi_tumor.demo $(DEMO_ARGS)

bench: setup
	$(PYTHON) benchmarks/run_benchmarks.py

clean:
	rm -rf $(VENV) .triton .pytest_cache .mypy_cache .ruff_cache demo_output
