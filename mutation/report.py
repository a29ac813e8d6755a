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
unexplained = [n for n, s in sorted(results.items()) if s != "killed" and n not in equivalent]
for name in unexplained:
    diff = subprocess.run([".venv/bin/mutmut", "show", name], capture_output=True, text=True).stdout
    print(diff.rstrip(), end="\n\n")
explained = sum(1 for n, s in results.items() if s != "killed" and n in equivalent)
summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
print(
    f"{len(results)} mutants in {seconds} s: {summary}; {explained} listed as equivalent; {len(unexplained)} unexplained"
)
sys.exit(1 if unexplained else 0)
