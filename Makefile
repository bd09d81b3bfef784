# Two commands for a fresh machine with only Python 3.11:
#   make serve   installs the server into .venv on first use, then runs it on tcp:7000
#   make test    adds the test tools to .venv on first use (and axe-core to
#                tests/node_modules with npm, if npm is there), then lint,
#                type check and tests
# and, for CI (.ci/run runs both):
#   make test-lowest   the tests again, in .venv-lowest, on the lowest versions
#                      setup.cfg allows (.ci/lowest-constraints.txt)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOWEST_VENV ?= .venv-lowest
LOWEST_BIN := $(LOWEST_VENV)/bin
LOWEST := .ci/lowest-constraints.txt
PORT ?= tcp:7000
ARGS ?=
# $(call versions,BIN,WHICH): print what a test run is on, before it (the two
# runs differ only there).
versions = @$(1)/python -c "import sys; from importlib.metadata import version as v; \
	print('$(2): pytest on Python', sys.version.split()[0] + ',', \
	', '.join(f'{n} {v(n)}' for n in ('Twisted', 'prompt_toolkit', 'txredisapi', 'hiredis')))"

.PHONY: serve test test-lowest lint typecheck unit client bench results clean

# What the server needs (with its optional cluster and metrics extras), and
# nothing of the test tools.
$(BIN)/.server: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[redis,metrics]'
	touch $@

$(BIN)/.installed: $(BIN)/.server
	$(BIN)/pip install --quiet -e '.[test,redis,metrics]'
	touch $@

$(LOWEST_BIN)/.installed: setup.cfg pyproject.toml $(LOWEST)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_BIN)/pip install --quiet --upgrade pip
	$(LOWEST_BIN)/pip install --quiet -c $(LOWEST) -e '.[test,redis]'
	touch $@

serve: $(BIN)/.server
	$(BIN)/twistd --pidfile= -n chat --port $(PORT) $(ARGS)

client: $(BIN)/.server
	$(BIN)/python -m chatproto.client $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# axe-core, which the page's accessibility test puts into the page
# (tests/package.json, pinned by tests/package-lock.json), with npm ci. No
# npm, or no registry: a warning, and that test says it is skipped.
NODE_TESTS := tests/node_modules/.installed
$(NODE_TESTS): tests/package.json tests/package-lock.json
	@if ! command -v npm >/dev/null; then \
	  echo "npm not found: the accessibility test (axe-core) will be skipped"; \
	elif (cd tests && npm ci --no-audit --no-fund --loglevel=error); then \
	  touch $@; \
	else \
	  echo "npm ci failed: the accessibility test (axe-core) will be skipped"; \
	fi

unit: $(BIN)/.installed $(NODE_TESTS)
	$(call versions,$(BIN),latest versions ($(VENV)))
	$(BIN)/python -m pytest -q $(ARGS)

test: lint typecheck unit

# Lint and type check are not repeated: they judge the code, not the versions.
test-lowest: $(LOWEST_BIN)/.installed
	$(call versions,$(LOWEST_BIN),lowest versions ($(LOWEST_VENV), $(LOWEST)))
	$(LOWEST_BIN)/python -m pytest -q $(ARGS)

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py $(ARGS)

# bench/RESULTS.md, regenerated from one run against every reference.
RESULTS_ARGS ?= --servers ours,naive,ngircd,inspircd --scenarios msg1,msg5,fanout,idle,rooms,room1,herd --repeat 2
results: $(BIN)/.installed
	$(BIN)/python bench/run.py $(RESULTS_ARGS) --markdown bench/RESULTS.md

clean:
	rm -rf $(VENV) $(LOWEST_VENV) build *.egg-info twisted/plugins/dropin.cache \
		tests/node_modules
