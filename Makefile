# Two commands for a fresh machine with only Python 3.11:
#   make serve   installs into .venv on first use, then runs the server on tcp:7000
#   make test    installs into .venv on first use, then lint, type check and tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= tcp:7000
ARGS ?=

.PHONY: serve test lint typecheck unit client bench clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,redis]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/twistd --pidfile= -n chat --port $(PORT) $(ARGS)

client: $(BIN)/.installed
	$(BIN)/python -m chatproto.client $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/python -m pytest -q $(ARGS)

test: lint typecheck unit

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info twisted/plugins/dropin.cache
