# Two entry points for a new user: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch/torchvision pair that installs on our CPU machines; override on other platforms,
# e.g. `make test TORCH_SPEC="torch torchvision"`. `CPU_ONLY=1` takes torch's CPU-only wheels
# (no CUDA libraries: a venv of about 2 GB instead of 6.3 GB; docs/install.rst).
ifdef CPU_ONLY
TORCH_SPEC ?= torch torchvision
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
else
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
endif
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint format docs docs-check docs-inventories bench clean install corpus

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),) $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[all,dev,docs]"
	touch $(STAMP)

# The training corpus (DATA_SOURCES): pip fetches the pinned source packages (no install) into
# $(CORPUS)/packages, every file is checked against its SHA-256 pin, slices go to $(CORPUS)/v1.
# pyradiomics ships its images only in its sdist, whose metadata step needs setuptools and wheel.
CORPUS ?= corpus
corpus: $(STAMP)
	$(PY) -m pip install --quiet setuptools wheel
	$(PY) -m deepinv_tunable.data.corpus build --root $(CORPUS)

demo: $(STAMP)
	$(VENV)/bin/deepinv-tunable audit recipes/demo_learned_prior.yaml --out results/demo

test: $(STAMP)
	$(PY) -m pytest

# ruff: lint (pyflakes, pycodestyle, import order, pyupgrade, bugbear) and the formatter, as CI runs them
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test-all: $(STAMP)
	$(PY) -m pytest -m ""

docs: $(STAMP)
	$(PY) -m sphinx -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

# What CI checks: every cross-reference resolves (-n) and any warning fails the build (-W; all
# are listed first). Fresh environment (-E), so unchanged pages are checked too; no tutorials
# (plot_gallery=0) and no network (DOCS_OFFLINE=1: only inventories cached by docs-inventories).
docs-check: $(STAMP)
	DOCS_OFFLINE=1 $(PY) -m sphinx -n -W --keep-going -E -q -b html -D plot_gallery=0 docs docs/_build/check

# Caches other projects' intersphinx inventories in docs/_intersphinx (not committed), for
# builds without network; Python's also comes from Debian's python3.11-doc when offline.
docs-inventories: $(STAMP)
	$(PY) docs/fetch_inventories.py

bench: $(STAMP)
	$(PY) -m benchmarks baselines

clean:
	rm -rf results docs/_build .pytest_cache
