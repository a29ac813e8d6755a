#!/bin/sh
# `make mutate`: mutation testing of the money-critical functions (mutation/scope.txt) with mutmut.
# Prints every surviving mutant not explained in mutation/equivalent.txt, with its diff (file and
# line), and exits 1 if there is any. Extra arguments replace the scope (e.g. one pattern).
set -eu
cd "$(dirname "$0")/.."
MUTMUT=${MUTMUT:-.venv/bin/mutmut}
if [ "$#" -gt 0 ]; then
  set -- "$@"
else
  set -- $(grep -v '^#' mutation/scope.txt | grep -v '^$')
fi
# An in-memory SQLite test database per forked test process: runs never collide.
unset DATABASE_URL
export POOL_TEST_DB=":memory:"
# From scratch every time: mutmut keeps verdicts of unchanged functions, even when tests changed.
rm -rf mutants
start=$(date +%s)
nice -n "${NICE:-15}" "$MUTMUT" run --max-children "${MUTATE_JOBS:-2}" "$@" >mutants.log 2>&1 || {
  tail -n 30 mutants.log; exit 2; }
end=$(date +%s)
"$MUTMUT" results --all true >mutants/results.txt
.venv/bin/python mutation/report.py mutants/results.txt mutation/equivalent.txt "$(( end - start ))" "$@"
