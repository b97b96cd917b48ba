# The two commands: `make run` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := ffmpeg espeak-ng chromium
# One thread per process: torch and faiss otherwise oversubscribe the 2 cores from the
# server's thread pool (see docs/benchmarks in shared).
export OMP_NUM_THREADS ?= 1

.PHONY: run test lint bench bench-quick model ablation system-deps venv clean

system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then S=""; else S="sudo"; fi; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, pinned, so nothing below can pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

test: system-deps venv
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

run: system-deps venv
	MMV_DEMO_CLIPS=$${MMV_DEMO_CLIPS:-60} $(PY) -m service

bench: system-deps venv
	@for b in bench/*.py; do echo "=== $$b"; $(PY) $$b || exit 1; done

bench-quick: system-deps venv
	@for b in bench/*.py; do echo "=== $$b --quick"; $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
