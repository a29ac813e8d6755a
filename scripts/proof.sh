#!/usr/bin/env bash
# `make proof`: the long version of the proof, on SQLite and then PostgreSQL, and the figures of
# the run written into docs/RELIABILITY.md. `make test` runs the same tests at their bounded sizes.
set -uo pipefail
cd "$(dirname "$0")/.."

export PROOF_SCHEDULES="${PROOF_SCHEDULES:-1000}"        # fault schedules per database
export PROOF_HOUR_CAP="${PROOF_HOUR_CAP:-50}"            # the storm's hourly cap (the product default)
export PROOF_WEBHOOKS="${PROOF_WEBHOOKS:-500}"           # the storm's webhooks
export PROOF_FUZZ_EXAMPLES="${PROOF_FUZZ_EXAMPLES:-1000}"  # generated webhook requests
export PROOF_API_EXAMPLES="${PROOF_API_EXAMPLES:-100}"   # schemathesis cases per API operation
POSTGRES_URL="${PROOF_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

TESTS=(
  tests/proof
  tests/webhooks/test_processes.py
  tests/webhooks/test_webhook_fuzz.py
  tests/webhooks/test_webhook_view.py
  tests/test_api_schema_fuzz.py
  tests/accounts/test_hostile_uploads.py
  tests/test_secrets.py
  tests/test_urls_auth.py
)
OUT=tests/artifacts/proof
rm -rf "$OUT" && mkdir -p "$OUT"

status=0
.venv/bin/python -m pytest "${TESTS[@]}" --junitxml="$OUT/junit-sqlite.xml" || status=1
DATABASE_URL="$POSTGRES_URL" .venv/bin/python -m pytest "${TESTS[@]}" --junitxml="$OUT/junit-postgresql.xml" || status=1
.venv/bin/python scripts/proof_report.py --out docs/RELIABILITY.md || status=1
exit $status
