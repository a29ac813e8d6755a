# `make run` sets up and starts the service on a fresh machine; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint proof mutate bench-load bench-upload bench-webhook bench-follow-up bench-admin messages clean

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
	$(BIN)/python manage.py check_pool_keys
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py ensure_admin
	$(BIN)/python scripts/serve.py

test: $(VENV)/.dev
	scripts/ensure_chromium.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The repo's style (ruff.toml): formatting, import order, undefined names, unused code.
lint: $(VENV)/.dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# The long version of the proof (docs/RELIABILITY.md), on SQLite and PostgreSQL; writes its figures there.
proof: $(VENV)/.dev
	scripts/proof.sh

# Mutation testing of the money-critical functions (mutation/scope.txt); not part of CI (README).
mutate: $(VENV)/.dev
	mutation/run.sh $(MUTATE_ARGS)

bench-load: $(VENV)/.dev
	$(BIN)/python bench/bench_load.py $(BENCH_ARGS)

# The admin's path: a 20 MB upload's preview (new, then all duplicates) and a big load's progress, through a real worker.
bench-upload: $(VENV)/.dev
	$(BIN)/python bench/bench_upload.py $(BENCH_ARGS)

bench-webhook: $(VENV)/.dev
	$(BIN)/python bench/bench_webhook.py $(BENCH_ARGS)

bench-follow-up: $(VENV)/.dev
	$(BIN)/python bench/bench_follow_up.py $(BENCH_ARGS)

bench-admin: $(VENV)/.dev
	$(BIN)/python bench/bench_admin.py $(BENCH_ARGS)

# Refresh the 简体中文 catalogue after changing user-visible strings (needs gettext), then translate
# the new entries in locale/zh_Hans/LC_MESSAGES/django.po and run it again to compile.
messages: $(VENV)/.runtime
	POOL_IGNORE_DOTENV=1 SECRET_KEY=messages POOL_ENCRYPTION_KEY=$$($(BIN)/python -c 'import base64;print(base64.b64encode(bytes(32)).decode())') \
	  sh -c '$(BIN)/python manage.py makemessages -l zh_Hans --ignore=.venv --ignore=bench --ignore=devtools --ignore=tests --ignore=staticfiles && \
	         $(BIN)/python manage.py compilemessages -l zh_Hans --ignore=.venv'

clean:
	rm -rf $(VENV) staticfiles test_db.sqlite3*
