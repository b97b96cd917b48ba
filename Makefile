# The two commands: `make run` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := ffmpeg espeak-ng chromium postgresql haproxy
# One thread per process: torch and faiss otherwise oversubscribe the 2 cores from the
# server's thread pool (see docs/benchmarks in shared).
export OMP_NUM_THREADS ?= 1

.PHONY: run test soak audit lock lint bench bench-quick model ablation ablation-table system-deps bench-deps venv clean

# postgresql: the server binaries tests/postgres_cluster.py starts throwaway clusters with
# (Debian keeps initdb and pg_ctl off PATH, hence the ls). Where services can start, apt
# also starts the package's own cluster on port 5432; the tests do not use it.
# haproxy: the reverse proxy of compose.postgres.yaml, whose config tests/deploy checks.
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	PATH="$$PATH:/usr/sbin" command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then S=""; else S="sudo"; fi; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	fi
	@# Debian's docker-compose validates compose.yaml in tests/deploy; its recommended
	@# Docker engine (docker.io) is not needed for that, so it is left out.
	@if ! command -v docker-compose >/dev/null; then \
	  echo "installing system packages: docker-compose"; \
	  if [ "$$(id -u)" = 0 ]; then S=""; else S="sudo"; fi; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq \
	    --no-install-recommends docker-compose >/dev/null; \
	fi

# The HTTP load generators bench/service.py drives (docs/benchmarks in shared), and the
# haproxy it puts in front of two API replicas (Debian keeps haproxy in /usr/sbin).
bench-deps: system-deps
	@if ! command -v hey >/dev/null || ! command -v wrk >/dev/null \
	    || ! PATH="$$PATH:/usr/sbin" command -v haproxy >/dev/null; then \
	  echo "installing system packages: hey wrk haproxy"; \
	  if [ "$$(id -u)" = 0 ]; then S=""; else S="sudo"; fi; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq hey wrk haproxy >/dev/null; \
	fi

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "Python 3.11 or newer is needed; $(PYTHON) is $$($(PYTHON) -V 2>&1) (make PYTHON=python3.11 ...)"; \
	  exit 1; }
	@# Debian's pythons make no venv without their -venv package (ensurepip).
	@if ! test -x $(PY) && ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
	  pkg="python$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"; \
	  echo "installing system packages: $$pkg"; \
	  if [ "$$(id -u)" = 0 ]; then S=""; else S="sudo"; fi; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq $$pkg >/dev/null; \
	fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip -c requirements.lock
	# The CPU build of torch first, pinned, so nothing below can pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# Within pyproject.toml's ranges, the versions requirements.lock pins: what is tested
	# and audited is what is installed, and a new upstream release changes nothing here
	# until `make lock` takes it in.
	$(PY) -m pip install -q -e '.[dev]' -c requirements.lock
	@touch $(STAMP)

venv: $(STAMP)

test: system-deps venv audit
	$(PY) -m pytest -q

# Known vulnerabilities of the locked dependencies (requirements.lock): pip-audit where
# its service answers, else PyPI's JSON API (tools/audit_dependencies.py says which and
# what it could not check). Each one fixed or explained in audit-exceptions.toml; a
# registry that does not answer is a loud warning, not a failure.
audit: venv
	$(PY) tools/audit_dependencies.py

# Rewrite requirements.lock from the venv (after a change of pyproject.toml's dependencies).
lock: venv
	$(PY) tools/audit_dependencies.py --write-lock

# The whole matrix: also the PostgreSQL runs of the tests marked `postgres_in_soak`
# (retrieval quality, the page's training panel), which make test leaves to SQLite.
soak: system-deps venv
	MMV_TEST_SOAK=1 $(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/hadolint --config .hadolint.yaml docker/Dockerfile docker/haproxy/Dockerfile

# The API and, beside it, the training worker (stopped with the API: Ctrl-C stops both).
run: system-deps venv
	@trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT; \
	$(PY) -m service.worker & worker=$$!; \
	MMV_DEMO_CLIPS=$${MMV_DEMO_CLIPS:-60} $(PY) -m service

bench: bench-deps venv
	@for b in bench/*.py; do echo "=== $$b"; $(PY) $$b || exit 1; done

bench-quick: bench-deps venv
	@for b in bench/*.py; do echo "=== $$b --quick"; $(PY) $$b --quick || exit 1; done

# -- the default model and the ablation (docs/training.md, docs/ablation.md) -------------
# One corpus for both, generated once (~14k items; data/ is not in git). Its test split
# holds the 1,000 retrieval candidates.
CORPUS ?= data/corpus-main
CORPUS_N ?= 10000
CORPUS_SEED ?= 1
# The small fixed set the default model's test reproduces (tests/model/train_fixtures.py).
CHECK_CORPUS ?= data/corpus-check
MODEL_RUN ?= data/runs/default
# Batch 256 rather than the tiny config's 32: at batch 32 a clip meets too few negatives
# that share its sounding objects, and training drops the background from every tower.
# 2,500 steps chosen on validation (audio->video R@1 0.18 at batch 32 x 6,000 steps,
# 0.49 at 256 x 1,500, 0.56 at 256 x 2,500; docs/training.md "The recipe").
MODEL_BATCH ?= 256
MODEL_STEPS ?= 2500
# The ablation at the default model's recipe (batch 256 x 2,500 steps): FAC, shared and
# disjoint at 2 seeds, then the two-modality variants at 1, seed by seed. A run takes
# 37-110 minutes on 2 cores (0.9-2.6 s a step; this machine's speed drifts). Each
# finished run's result is kept in git, in ABLATION_KEEP, and not trained again on any
# machine; a stopped run resumes from its last save (every 100 steps) in ABLATION_OUT
# while that folder lasts. So it runs in pieces; `make ablation-table` reports those kept. The
# batch-32 x 2,000-step table stays in docs/ablation.md beside it (ABLATION_STEPS=2000
# ABLATION_BATCH=32 ABLATION_SEEDS="0 1 2" ABLATION_PAIR_SEEDS="0 1 2" remakes it).
ABLATION_STEPS ?= $(MODEL_STEPS)
ABLATION_BATCH ?= $(MODEL_BATCH)
ABLATION_SEEDS ?= 0 1
ABLATION_PAIR_SEEDS ?= 0
ABLATION_OUT ?= data/ablation-$(ABLATION_STEPS)
ABLATION_KEEP ?= docs/ablation-runs/$(ABLATION_STEPS)
ABLATION_ARGS = --data $(CORPUS) --out $(ABLATION_OUT) --keep $(ABLATION_KEEP) --steps $(ABLATION_STEPS) \
	--set train.batch_size=$(ABLATION_BATCH) --seeds $(ABLATION_SEEDS) \
	--pair-seeds $(ABLATION_PAIR_SEEDS) --doc docs/ablation.md
# Training uses every core (the OMP_NUM_THREADS=1 above is for tests and the server).
TRAIN_THREADS ?= $(shell nproc)
DEFAULT_FILES := weights.safetensors config.json vocab.json metrics.json eval.json eval.md \
	eval.png loss.csv loss.png val.csv asr.lm asr.dict asr-wer.txt

$(CORPUS)/manifest.jsonl:
	$(PY) -m model.corpus make --out $(CORPUS) --n $(CORPUS_N) --seed $(CORPUS_SEED)

$(CHECK_CORPUS)/manifest.jsonl:
	$(PY) -m model.corpus make --out $(CHECK_CORPUS) --n 100 --seed 5 --audio 10 --stills 0

model: system-deps venv $(CORPUS)/manifest.jsonl $(CHECK_CORPUS)/manifest.jsonl
	OMP_NUM_THREADS=$(TRAIN_THREADS) $(PY) -m model.training --config tiny --data $(CORPUS) --out $(MODEL_RUN) \
		--steps $(MODEL_STEPS) --set train.batch_size=$(MODEL_BATCH) --set train.eval_every=250 \
		--set train.save_every=50
	$(PY) -m model.evaluation $(MODEL_RUN) --data $(CORPUS) --record test
	$(PY) -m model.evaluation $(MODEL_RUN) --data $(CHECK_CORPUS) --split all --candidates 100 \
		--probe-train 0 --no-baseline --record check --json $(MODEL_RUN)-check/eval.json
	# The speech recogniser's language model, built from the train split's transcripts;
	# the service transcribes uploads without a transcript with it. WER on the test split.
	set -o pipefail; $(PY) -m model.asr wer --corpus $(CORPUS) --split test --limit 40 --save-lm $(MODEL_RUN) \
		| tee $(MODEL_RUN)/asr-wer.txt
	rm -rf models/default.new && mkdir -p models/default.new
	cp $(addprefix $(MODEL_RUN)/,$(DEFAULT_FILES)) models/default.new/
	rm -rf models/default && mv models/default.new models/default
	@du -sh models/default

ablation: system-deps venv $(CORPUS)/manifest.jsonl
	OMP_NUM_THREADS=$(TRAIN_THREADS) $(PY) -m model.training.ablation $(ABLATION_ARGS)

# The table from the runs finished so far (a long ablation run in pieces).
ablation-table: venv
	$(PY) -m model.training.ablation $(ABLATION_ARGS) --table-only

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
