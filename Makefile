# rolecast — the two commands a newcomer runs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3
SAMPLE := examples/sample/harbor_lights.txt
SAMPLE_PACK := packs/maggie

.PHONY: setup demo test test-fast test-min lint bench gpu-check clean

# $(call venv,DIR,PIP OPTIONS): a virtualenv with rolecast and every extra installed in DIR.
# CPU torch first: any other torch request would pull a multi-GB CUDA build.
define venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install -q --upgrade pip
	$(1)/bin/pip install -q torch==2.13.0 || $(1)/bin/pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
	$(1)/bin/pip install -q -e '.[all,dev]' $(2)
endef

$(STAMP): pyproject.toml
	$(call venv,$(VENV))
	touch $(STAMP)

setup: $(STAMP)

# The demo tunes Maggie once (about 4 minutes on two cores; skipped while the pack is up to date):
# three passes over her scene stretches, two per step, so that 783 lines give 57 optimizer steps.
DEMO_TRAIN := --train --no-eval --epochs 3 --batch-size 2 --learning-rate 5e-4

$(SAMPLE_PACK)/adapter.gguf: $(SAMPLE) | $(STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/rolecast build $(SAMPLE) --character Maggie --show "Harbor Lights" $(DEMO_TRAIN) --out $(SAMPLE_PACK) && \
	echo "Maggie's pack prepared and tuned in $$(( $$(date +%s) - start )) s."

demo: $(SAMPLE_PACK)/adapter.gguf
	@echo "Maggie's pack: $(SAMPLE_PACK) (profile: $(SAMPLE_PACK)/profile.md, training curves: $(SAMPLE_PACK)/train/loss.png). Terminal chat: $(VENV)/bin/rolecast chat $(SAMPLE_PACK)"
	@echo "Web chat and OpenAI-compatible API on http://127.0.0.1:8000 — Ctrl-C to stop."
	$(VENV)/bin/rolecast serve $(SAMPLE_PACK) --db packs/demo.db

# Lint and the fast suite first, so that a lint or logic break fails in minutes; then the slow tests.
test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports  # the layers (pyproject's [tool.importlinter]): an import against the grain names its edge
	$(PY) -m pytest -m "not slow"
	$(PY) tests/llama_converter.py  # llama.cpp's own converter, for the architecture tests (fetched once)
	$(PY) -m pytest -m slow --durations=15  # the slowest, named in the log: the suite is most of CI

test-fast: setup
	$(PY) -m pytest -m "not slow"

# The fast suite on the dependency floors (constraints-min.txt), in a venv of its own; CI runs it.
MIN_VENV := .venv-min
test-min:
	$(call venv,$(MIN_VENV),-c constraints-min.txt)
	ROLECAST_MIN_VENV=1 $(MIN_VENV)/bin/python -m pytest -m "not slow" -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

# CUDA training (bf16, QLoRA) against the CPU and vLLM serving the LoRA; says so and exits 0 without CUDA.
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

bench: setup
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/chat.py
	$(PY) benchmarks/serve.py
	$(PY) benchmarks/train.py

clean:
	rm -rf $(VENV) $(MIN_VENV) packs .pytest_cache
