# Rapport: `make run` runs the whole system here, `make test` runs every test.
# Both set themselves up on a fresh Debian/Ubuntu machine with Python 3.11+.

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run demo test test-unit test-service test-e2e lint format asyncapi bench bench-import bench-group-commit bench-loyalty bench-orders bench-op-cost constraints clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt deploy/local/bootstrap.sh
	deploy/local/bootstrap.sh
	touch $(STAMP)

run: install
	$(BIN)/python deploy/local/run.py

# A realistic shop (300 customers, calls due, an open escalation) in the fresh system `make run` started.
demo: install
	$(BIN)/python deploy/local/demo.py

test: install
	deploy/local/ensure-rabbitmq.sh --tests
	deploy/local/ensure-chromium.sh
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m unit

test-service: install
	deploy/local/ensure-rabbitmq.sh --tests
	$(BIN)/python -m pytest -m service

test-e2e: install
	deploy/local/ensure-rabbitmq.sh --tests
	deploy/local/ensure-chromium.sh
	$(BIN)/python -m pytest -m e2e

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks print figures and never fail; none is part of `make test`. Results are recorded in docs/benchmarks.md.
# `make bench`: a shop's day through the four services as processes, next to the raw floor
# (ARGS="--orders 5000 --customers 1500" for a shorter run; --help lists the settings).
bench: install
	deploy/local/ensure-rabbitmq.sh --tests
	$(BIN)/python -m tests.bench.pipeline $(ARGS)

# `make bench-import`: a shop's history (100,000 orders in a Shopify export) imported through the four services
# (ARGS="--orders 20000 --customers 5000" for a shorter run).
bench-import: install
	deploy/local/ensure-rabbitmq.sh --tests
	$(BIN)/python -m tests.bench.import_history $(ARGS)

bench-group-commit: install
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

bench-op-cost: install
	$(BIN)/python -m tests.bench.op_cost

# Build every service's image from deploy/Dockerfile with buildah (no Docker daemon needed) and run each from its
# image as user 10001 against the local RabbitMQ and a MongoDB until /readyz says ok (minutes; not in `make test`).
.PHONY: image-check
image-check: install
	deploy/local/ensure-rabbitmq.sh
	$(BIN)/python deploy/local/image_check.py $(SERVICES)

# The whole stack in Docker (deploy/docker-compose.yml; needs a Docker daemon). The first `make up` writes
# deploy/.env from deploy/.env.example with fresh random secrets; keep that file, the data volumes use them.
.PHONY: up down dead-letters replay-dead-letters export-customer
COMPOSE ?= docker compose
STACK := $(COMPOSE) --file deploy/docker-compose.yml

up: deploy/.env
	$(STACK) up --detach --build --wait

down:
	$(STACK) down

deploy/.env:
	python3 deploy/make-env.py deploy/.env.example deploy/.env

# Dead letters of one service, e.g. `make dead-letters SERVICE=loyalty [LIMIT=20]`: ids, type, reason;
# SERVICE=unrouted lists the events no service binds (kept in <prefix>.unrouted) with their routing keys.
# After the fix is deployed, `make replay-dead-letters SERVICE=loyalty` moves them back to its queue.
# Both use RABBITMQ_URL and CRM_PREFIX; in the Docker stack run them inside a container instead
# (docs/operations.md, "Dead letters").
dead-letters: install
	@test -n "$(SERVICE)" || { echo "usage: make dead-letters SERVICE=<orders|followups|loyalty|referrals|unrouted> [LIMIT=N]"; exit 2; }
	$(BIN)/python -m shared.deadletters list $(SERVICE) $(if $(LIMIT),--limit $(LIMIT))

replay-dead-letters: install
	@test -n "$(SERVICE)" || { echo "usage: make replay-dead-letters SERVICE=<orders|followups|loyalty|referrals|unrouted> [LIMIT=N]"; exit 2; }
	$(BIN)/python -m shared.deadletters replay $(SERVICE) $(if $(LIMIT),--limit $(LIMIT))

# Everything the four services hold on one customer, in one JSON document (GDPR Art. 15 and 20), e.g.
# `make export-customer CUSTOMER=cus_1001 OUT=cus_1001.json`; uses ORDERS_URL … REFERRALS_URL and RAPPORT_API_KEY
# (or ADMIN_API_KEY); exits non-zero when a service did not answer (docs/operations.md, "Exporting a customer's data").
export-customer: install
	@test -n "$(CUSTOMER)" || { echo "usage: make export-customer CUSTOMER=<customer id> [OUT=file.json]"; exit 2; }
	$(BIN)/python -m shared.export "$(CUSTOMER)" $(if $(OUT),--out "$(OUT)")
