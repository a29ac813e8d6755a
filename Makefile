# `make run` sets up and starts the service on a fresh machine; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench-load migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(BIN)/python scripts/init_env.py
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py ensure_admin
	$(BIN)/python scripts/serve.py

test: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench-load: $(VENV)/.dev
	$(BIN)/python bench/bench_load.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles test_db.sqlite3*
