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
  tests/webhooks/test_demand.py
  tests/webhooks/test_run_chunks_and_batches.py
  tests/accounts/test_load_worker.py
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

# Each database its own test database (POOL_TEST_DB), so that PROOF_PARALLEL=1 can run the two
# side by side (half the wall time on a quiet machine of 2 cores or more).
sqlite() { POOL_TEST_DB="${PROOF_SQLITE_DB:-}" .venv/bin/python -m pytest "${TESTS[@]}" --junitxml="$OUT/junit-sqlite.xml"; }
postgres() {
  DATABASE_URL="$POSTGRES_URL" POOL_TEST_DB="${PROOF_POSTGRES_DB:-test_proof}" \
    .venv/bin/python -m pytest "${TESTS[@]}" --junitxml="$OUT/junit-postgresql.xml"
}
status=0
if [ -n "${PROOF_PARALLEL:-}" ]; then
  sqlite > "$OUT/sqlite.log" 2>&1 & first=$!
  postgres > "$OUT/postgresql.log" 2>&1 || status=1
  wait $first || status=1
  tail -n 3 "$OUT/sqlite.log" "$OUT/postgresql.log"
else
  sqlite || status=1
  postgres || status=1
fi
.venv/bin/python scripts/proof_report.py --out docs/RELIABILITY.md || status=1
exit $status
