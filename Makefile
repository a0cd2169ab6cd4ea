# cohortsync: `make run` runs the product, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install browser deploy-tools run test test-fast test-faults test-deploy lint format typecheck bench all clean

help:
	@echo "make run        run edge + 2 workers (embedded Postgres/Redis unless URLs are set)"
	@echo "make test       install what is needed and run the whole test suite"
	@echo "make test-fast  the suite less tests/system (no process started, no server killed)"
	@echo "make test-faults  the full fault suite (~6 min): kills, outages, one report"
	@echo "make test-deploy  build the image with podman, run it, compose and Prometheus (deploy/)"
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

# make test-deploy runs deploy/ for real: podman (as root, runc, cgroupfs), a Debian base image
# made by mmdebstrap, Debian's Prometheus and promtool. Missing packages are installed where we
# may (root, with apt-get), as for Chromium; elsewhere the tests fail naming what is missing.
# netavark (podman's network) needs iptables: without it every container start fails.
DEPLOY_PACKAGES := podman runc conmon netavark aardvark-dns iptables mmdebstrap prometheus
deploy-tools:
	@missing=$$(for p in $(DEPLOY_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' \
		|| echo $$p; done); \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's" $$missing "for make test-deploy"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	else \
		echo "make test-deploy needs:" $$missing "(Debian packages; or run it as root)"; exit 1; \
	fi

# Not part of `make test`: .ci/run runs it after. About 3.5 minutes cold (no image yet), 2 cached.
test-deploy: $(STAMP) deploy-tools
	$(BIN)/python -m pytest -m deploy -o timeout=900 tests/deploy_real $(PYTEST_ARGS)

run: $(STAMP)
	$(BIN)/python -m deploy.local

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The loop while changing code: tests/system (processes started, servers killed) is left out.
test-fast: $(STAMP) browser
	$(BIN)/python -m pytest -m "not system" $(PYTEST_ARGS)

# The suite's short fault plan runs inside `make test`; this is the full one.
test-faults: $(STAMP)
	COHORTSYNC_TEST_FAULTS=full $(BIN)/python -m pytest tests/system/test_faults.py \
		tests/system/test_redis_persistence.py tests/system/test_redis_failover.py $(PYTEST_ARGS)

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
