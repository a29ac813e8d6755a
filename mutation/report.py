"""Summarise a mutmut run: counts, then each surviving mutant not listed as equivalent, with its diff."""

import fnmatch
import subprocess
import sys
from collections import Counter

results_path, equivalent_path, seconds, *patterns = sys.argv[1:]
results = {}
for line in open(results_path, encoding="utf-8"):
    name, _, status = line.strip().rpartition(": ")
    if name and (not patterns or any(fnmatch.fnmatch(name, p) for p in patterns)):
        results[name] = status
equivalent = {}
for line in open(equivalent_path, encoding="utf-8"):
    if line.strip() and not line.startswith("#"):
        name, _, reason = line.strip().partition(" ")
        equivalent[name] = reason.strip()

counts = Counter(results.values())
# A timeout is a mutant the tests caught: it hangs them (pk__gte for pk__gt, continue for break).
# setup.cfg's timeout_constant keeps a merely slow run on a loaded machine from looking like one.
CAUGHT = ("killed", "timeout")
unexplained = [n for n, s in sorted(results.items()) if s not in CAUGHT and n not in equivalent]
for name in unexplained:
    diff = subprocess.run([".venv/bin/mutmut", "show", name], capture_output=True, text=True).stdout
    print(diff.rstrip(), end="\n\n")
explained = sum(1 for n, s in results.items() if s not in CAUGHT and n in equivalent)
# Names listed as equivalent that this run did not produce: stale (the function changed).
stale = [n for n in equivalent if n not in results and any(fnmatch.fnmatch(n, p) for p in patterns)]
for name in stale:
    print(f"# {name}: listed in {equivalent_path} but no longer a mutant of the run; remove it")
summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
print(
    f"{len(results)} mutants in {seconds} s: {summary}; {explained} listed as equivalent; {len(unexplained)} unexplained"
)
sys.exit(1 if unexplained or stale else 0)
