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

test: install
	$(PY) -m pytest -q -ra

proto: install
	PYTHON=$(PY) scripts/gen_proto.sh

lint: install
	$(BIN)/ruff check src tests
