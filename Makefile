# The two commands of the README: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench install install-dev

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/activate
	$(BIN)/pip install -q -r requirements.txt

install-dev: $(BIN)/activate
	$(BIN)/pip install -q -r requirements-dev.txt

# Installs, creates/upgrades the SQLite database in instance/, starts gunicorn on :8000.
# AUTHMD_DEV_PROVIDER=1 turns on the development identity provider for local evaluation.
run: install
	AUTHMD_ENV_NAME=development AUTHMD_DEV_PROVIDER=$${AUTHMD_DEV_PROVIDER-1} $(BIN)/flask --app app init-db
	AUTHMD_ENV_NAME=development AUTHMD_DEV_PROVIDER=$${AUTHMD_DEV_PROVIDER-1} $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# Installs, then runs the whole suite on SQLite and, when it answers, on PostgreSQL.
test: install-dev
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/test-all

# The load benchmark (bench/README.md): SQLite by default; BENCH_ARGS="--pg" for PostgreSQL.
bench: install-dev
	PYTHON="$(abspath $(BIN))/python" bench/run $(BENCH_ARGS)
