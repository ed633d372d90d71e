# longseq: everything a fresh machine needs is reachable from `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.setup-stamp
LOCKS := requirements/lock-cpu.txt $(wildcard requirements/lock-launch.txt)
DEMO_DATA ?= data/demo
DEMO_RUN ?= runs/demo
NPROC ?= 2
PYTEST_ARGS ?=

.PHONY: setup demo test lint format bench clean help
help:
	@echo "make demo   - set up if needed, generate data, train on $(NPROC) processes, evaluate"
	@echo "make test   - set up if needed, lint, run the test suite"
	@echo "make setup  - create .venv from the lock files (idempotent)"
	@echo "make bench  - regenerate docs/benchmarks.md (quick suites)"

setup: $(STAMP)

# Rebuilt only when a lock file or pyproject.toml changes: a second `make setup` is instant.
$(STAMP): $(LOCKS) pyproject.toml tools/check_torch_wheel.py
	@command -v $(PYTHON) >/dev/null || { echo "ERROR: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check pip==25.3 setuptools==84.2.1
	$(PY) tools/check_torch_wheel.py $(PIP) "$$(grep -E '^torch==' requirements/lock-cpu.txt)"
	$(PIP) install --quiet --disable-pip-version-check --no-deps $(addprefix -r ,$(LOCKS))
	$(PIP) install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, fbgemm_gpu, torchrec; torch.ops.fbgemm.jagged_to_padded_dense; \
	  assert torch.version.cuda is None, 'a CUDA torch got installed'; print('setup ok: torch', torch.__version__, 'torchrec', torchrec.__version__)"
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m longseq.datasets.synth preset=ci out=$(DEMO_DATA) seed=0
	rm -rf $(DEMO_RUN)
	$(VENV)/bin/torchrun --nproc-per-node $(NPROC) -m longseq.train experiment=ci \
	  data.path=$(DEMO_DATA) run_dir=$(DEMO_RUN)
	$(PY) -m longseq.eval checkpoint=$(DEMO_RUN) data.path=$(DEMO_DATA) \
	  out=$(DEMO_RUN)/eval windows=[50,125,250]

bench: setup
	$(PY) -m longseq.bench suite=all quick=true device=cpu out=benchmarks/results/cpu
	$(PY) -m longseq.bench.report

clean:
	rm -rf $(DEMO_RUN) $(DEMO_DATA) .pytest_cache .ruff_cache
