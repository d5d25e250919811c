# The two commands a fresh machine needs (Python >= 3.11):
#   make run   - install, migrate the SQLite database under ./var, serve API + UI on 127.0.0.1:8000
#   make test  - the whole test suite (SQLite; set ENTITLE_TEST_DATABASE_URL for PostgreSQL)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: run test install install-dev bench bench-heartbeat bench-axis bench-my2n bench-events bench-verify clean

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
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python -m bench.run

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

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
