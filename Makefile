# Postroom — `make run` starts it on SQLite; `make test` runs every gate.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LINTED := src tests $(wildcard bench)
export POSTROOM_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv and install Postroom

.PHONY: run
run: $(VENV)/.installed ## Set up and run Postroom on SQLite at http://127.0.0.1:8000
	$(BIN)/postroom serve

.PHONY: lint
lint: $(VENV)/.installed-test ## ruff format --check, ruff check, mypy --strict
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy --strict src

.PHONY: postgres
postgres: $(VENV)/.installed-test ## Make sure the test PostgreSQL answers (starts it under CI)
	@scripts/ensure-postgres.sh "$(BIN)/python"

.PHONY: test
test: $(VENV)/.installed-test lint postgres ## Set up and run every gate and the whole suite (SQLite + PostgreSQL)
	$(BIN)/pytest -q

.PHONY: bench-tools
bench-tools: ## Install Postfix's smtp-sink/smtp-source and wrk (no daemon started)
	@scripts/ensure-bench-tools.sh

.PHONY: bench
bench: $(VENV)/.installed-test bench-tools ## Run every benchmark with --quick
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

.PHONY: fmt
fmt: $(VENV)/.installed-test ## Format and autofix
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

.PHONY: clean
clean: ## Remove the virtualenv and caches (keeps ./var)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
