# Everything the project needs is installed from here: `make run`, `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test proto lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Serves on the embedded SQLite database with the sandbox provider: HTTP :8080, gRPC :9090.
run: install
	$(BIN)/payments-svc db migrate
	@echo "A development API key (send it as x-api-key / X-API-Key; it may act for any caller_service):"
	@$(BIN)/payments-svc keys create --service dev-caller --acts-for '*'
	$(BIN)/payments-svc serve

test: install browser
	$(PY) -m pytest -q -ra

# The sandbox checkout's browser tests (tests/checkout) drive Debian's Chromium through its
# chromedriver: installed here when missing and running as root (about 125 MB to download), else those tests
# skip saying why (under CI=true they fail instead).
.PHONY: browser
browser:
	@{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	  else echo "test: /usr/bin/chromium or /usr/bin/chromedriver is missing; the browser tests will skip (as root: apt-get install chromium chromium-driver)" >&2; fi; }

proto: install
	PYTHON=$(PY) scripts/gen_proto.sh
	$(PY) scripts/gen_openapi.py

lint: install
	$(BIN)/ruff check src tests examples

# Benchmarks, separate from `make test` (see bench/README.md): about 10 minutes on MariaDB at
# 127.0.0.1:3306 (root; TEST_MYSQL_* override), load from h2load and Node.js. Writes
# bench/results/<date>.json and the table in bench/README.md.
# `make bench BENCH_ARGS=--profile` profiles one server process with py-spy instead.
BENCH_ARGS ?=
.PHONY: bench
bench: install
	@command -v h2load >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client; \
	  else echo "bench: h2load is missing; install nghttp2-client (needs root: apt-get install nghttp2-client)" >&2; exit 1; fi; }
	@command -v node >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs; \
	  else echo "bench: node is missing; install Node.js >= 18 (apt-get install nodejs)" >&2; exit 1; fi; }
	$(PY) bench/run.py $(BENCH_ARGS)

# End-to-end suite, separate from `make test` (see e2e/run.sh): a fresh database on the local
# MariaDB (started if installed and down) or on E2E_DATABASE_URL, `payments-svc serve` and every
# worker as real processes, the lifecycles of every provider over gRPC and HTTP, then teardown.
.PHONY: e2e
e2e: install
	PYTHON=$(PY) bash e2e/run.sh $(E2E_ARGS)
