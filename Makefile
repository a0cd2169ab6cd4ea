# cohortsync: `make run` runs the product, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install browser run test lint format typecheck bench all clean

help:
	@echo "make run        run edge + 2 workers (embedded Postgres/Redis unless URLs are set)"
	@echo "make test       install what is needed and run the whole test suite"
	@echo "make bench      run the benchmarks and print one table"
	@echo "make lint | format | typecheck | all | clean"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) browser

# The dashboard test drives a real headless Chromium. Where none is found and we may (root, with
# apt-get), Debian's is installed; elsewhere the test fails saying how to get one or skip it.
browser:
	@[ -n "$$COHORTSYNC_TEST_CHROMIUM" ] || command -v chromium >/dev/null \
	|| command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
	|| if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the dashboard test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
			>/dev/null; } || echo "could not install chromium: the dashboard test will fail"; \
	else \
		echo "no Chromium: the dashboard test will fail (install chromium, or set" \
			"COHORTSYNC_TEST_NO_BROWSER=1 to skip it)"; \
	fi

run: $(STAMP)
	$(BIN)/python -m deploy.local

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m tests.bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

all: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
