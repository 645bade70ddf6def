# Rapport: `make run` runs the whole system here, `make test` runs every test.
# Both set themselves up on a fresh Debian/Ubuntu machine with Python 3.11+.

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit test-service test-e2e lint format asyncapi bench bench-loyalty bench-orders constraints clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt deploy/local/bootstrap.sh
	deploy/local/bootstrap.sh
	touch $(STAMP)

run: install
	$(BIN)/python deploy/local/run.py

test: install
	deploy/local/ensure-rabbitmq.sh --tests
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m unit

test-service: install
	deploy/local/ensure-rabbitmq.sh --tests
	$(BIN)/python -m pytest -m service

test-e2e: install
	deploy/local/ensure-rabbitmq.sh --tests
	$(BIN)/python -m pytest -m e2e

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Prints figures; never part of `make test`. Results are recorded in docs/benchmarks.md.
bench: install
	deploy/local/ensure-rabbitmq.sh --tests
	$(BIN)/python -m tests.bench.group_commit 5000

asyncapi: install
	$(BIN)/python -m services.asyncapi docs/asyncapi

# Re-pin every dependency to what installs today (review the diff before committing).
constraints:
	rm -rf .constraints-venv
	python3 -m venv .constraints-venv
	.constraints-venv/bin/pip install --quiet --upgrade pip
	.constraints-venv/bin/pip install --quiet -e ".[dev]"
	.constraints-venv/bin/pip freeze --exclude-editable | grep -v '^rapport' > constraints.txt
	rm -rf .constraints-venv

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache

bench-loyalty: install
	deploy/local/ensure-rabbitmq.sh --tests
	$(BIN)/python -m tests.bench.loyalty 20000 5000

bench-orders: install
	deploy/local/ensure-rabbitmq.sh --tests
	$(BIN)/python -m tests.bench.orders_customers 100000
