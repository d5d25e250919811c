# The two commands a fresh machine needs (Python >= 3.11):
#   make run   - install, migrate the SQLite database under ./var, serve API + UI on 127.0.0.1:8000
#   make test  - the whole test suite (SQLite; set ENTITLE_TEST_DATABASE_URL for PostgreSQL)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (auto: one per CPU); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= auto
# Every worker imports the whole code base and the assertion-rewritten tests: let Python keep
# their bytecode (in the ignored __pycache__ dirs) even where PYTHONDONTWRITEBYTECODE is set,
# or each worker compiles it all again (~15 s per worker on 2 cores).
TEST_ENV ?= PYTHONDONTWRITEBYTECODE=

.PHONY: run test smoke install install-dev bench bench-api bench-heartbeat bench-axis bench-my2n bench-events bench-verify bench-cli bench-history bench-sign-in bench-portal clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null

$(VENV)/.installed: pyproject.toml device/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e ./device -e . >/dev/null
	touch $@

$(VENV)/.installed-dev: pyproject.toml device/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e ./device -e '.[dev]' >/dev/null
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	mkdir -p var
	$(BIN)/entitle migrate
	$(BIN)/entitle first-run --url http://$(HOST):$(PORT)
	$(BIN)/entitle serve --host $(HOST) --port $(PORT)

test: install-dev
	$(MAKE) -C device test
	$(TEST_ENV) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# `make run` on a clean copy of the tree, in a temp venv with the runtime dependencies alone:
# migrate, first-run, serve, sign in (API and web), open the dashboard, stop (.ci/smoke.py).
smoke:
	$(PYTHON) .ci/smoke.py

bench: install-dev
	$(BIN)/python -m bench.run

bench-api: install-dev
	$(BIN)/python -m bench.run api

bench-heartbeat: install-dev
	$(BIN)/python -m bench.run heartbeat

bench-axis: install-dev
	$(BIN)/python -m bench.run axis

bench-my2n: install-dev
	$(BIN)/python -m bench.run my2n

bench-events: install-dev
	$(BIN)/python -m bench.run events

bench-verify: install-dev
	$(BIN)/python -m bench.run verify

bench-cli: install-dev
	$(BIN)/python -m bench.run cli

bench-history: install-dev
	$(BIN)/python -m bench.run history

bench-sign-in: install-dev
	$(BIN)/python -m bench.run sign-in

bench-portal: install-dev
	$(BIN)/python -m bench.run portal

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
