# Set-up and the two entry points of the README. `make demo` and `make test` each create the virtual
# environment on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mlit-installed

.PHONY: setup demo test test-all test-cluster lint format clean

setup: $(STAMP)

# torch goes first, pinned to the CPU build: a bare `torch` requirement would pull a CUDA build of
# several GB. Everything else comes from the exact pins in constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet torch==2.13.0 -c constraints.txt
	$(PY) -m pip install --quiet -e '.[all,dev]' -c constraints.txt
	touch $(STAMP)

demo: setup
	$(PY) sweeps/language_count.py

test: setup
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m "not cluster"

# `ray up` -> `ray job submit` -> `ray down` on this machine over loopback SSH. It runs `ray stop`,
# so never beside another Ray (CI runs it after the suite).
test-cluster: setup
	$(PY) -m pytest -m cluster tests/test_cluster_local.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
