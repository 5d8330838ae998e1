# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test test-ha openapi migration translations bench localstripe clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Serve on 127.0.0.1:8000 (G4G_PORT overrides); embedded PostgreSQL under ./.g4g/ unless DATABASE_URL is set.
run: $(STAMP)
	$(BIN)/g4g migrate
	$(BIN)/g4g serve

## The whole programme end to end through the HTTP API on a fresh `g4g serve` (embedded PostgreSQL under ./.g4g/):
## make demo DEMO_ARGS="--orders 1000 --seed 7"; on a terminal the service stays up until Ctrl-C.
demo: $(STAMP)
	$(BIN)/g4g demo $(DEMO_ARGS)

## The whole test suite, on DATABASE_URL's server or an embedded one, in one process per core (each with its own
## databases; a test file's tests stay in one process). PYTEST_ARGS adds options, e.g. PYTEST_ARGS="-n 0 -x".
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --quiet .
	$(BIN)/mypy
	$(BIN)/pytest -n auto --dist loadfile --ignore=tests/ha --durations=15 $(PYTEST_ARGS)

## Highly available PostgreSQL (tests/ha): etcd and Patroni-managed PostgreSQL servers started on 127.0.0.1, the
## primary killed under load; replica reads; PgBouncer in transaction pooling; a point-in-time restore drill.
## Needs Debian's patroni, etcd-server, postgresql-15 and pgbouncer (`.ci/run` installs them).
test-ha: $(STAMP)
	$(BIN)/pytest -n 0 tests/ha $(PYTEST_ARGS)

## Regenerate openapi/openapi.json from the app.
openapi: $(STAMP)
	G4G_DATA_KEY=$$($(BIN)/python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())') \
	  $(BIN)/g4g openapi --output openapi/openapi.json

## New migration from the models: make migration m="add statements"
migration: $(STAMP)
	$(BIN)/alembic revision --autogenerate -m "$(m)"

## Re-extract the pages' strings into messages.pot and merge them into each language's .po (then translate).
translations: $(STAMP)
	$(BIN)/pybabel extract -F app/web/translations/babel.cfg -o app/web/translations/messages.pot \
	  --no-location --sort-output --width 110 --project "Goods for Good" .
	$(BIN)/pybabel update -i app/web/translations/messages.pot -d app/web/translations -D messages \
	  --width 110 --ignore-obsolete

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

## A Stripe-compatible test server (localstripe) on 127.0.0.1:8420, for trying settlement by hand; Ctrl-D stops it.
localstripe: $(STAMP)
	$(BIN)/python tests/stripe_server.py 8420
