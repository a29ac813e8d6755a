"""Write the figures of the last `make proof` into docs/RELIABILITY.md.

Reads what the run left in tests/artifacts/proof/: the JUnit XML of each database's test run
and the JSON figures the storm and the fault schedules write. Replaces the text between the
`<!-- proof:start -->` and `<!-- proof:end -->` markers. Exits 1 when the run had failures or
invariant violations (the figures are written anyway, so a failed run is on record too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts" / "proof"
START, END = "<!-- proof:start -->", "<!-- proof:end -->"
DATABASES = (("sqlite", "SQLite"), ("postgresql", "PostgreSQL"))
SIZES = (
    ("PROOF_SCHEDULES", "fault schedules per database"),
    ("PROOF_WEBHOOKS", "storm webhooks"),
    ("PROOF_HOUR_CAP", "storm hourly cap"),
    ("PROOF_FUZZ_EXAMPLES", "generated webhook requests"),
    ("PROOF_API_EXAMPLES", "schemathesis cases per API operation"),
)


def junit(database: str) -> dict[str, dict[str, float]]:
    """Per test file: tests, failed, skipped, seconds."""
    path = ARTIFACTS / f"junit-{database}.xml"
    files: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    if not path.exists():
        return {}
    for case in ET.parse(path).iter("testcase"):
        name = case.get("classname", "").replace(".", "/") + ".py"
        row = files[name]
        row["tests"] += 1
        row["seconds"] += float(case.get("time") or 0)
        if case.find("failure") is not None or case.find("error") is not None:
            row["failed"] += 1
        elif case.find("skipped") is not None:
            row["skipped"] += 1
    return files


def figures(name: str, database: str) -> dict | None:
    path = ARTIFACTS / f"{name}-{database}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render() -> tuple[str, int]:
    runs = {db: junit(db) for db, _ in DATABASES}
    found = {db: {n: figures(n, db) for n in ("storm", "fault-schedules")} for db, _ in DATABASES}
    failures = sum(int(row["failed"]) for files in runs.values() for row in files.values())
    violations = [
        f"{label}, {name}: {v}"
        for db, label in DATABASES
        for name, data in found[db].items()
        if data
        for v in data["violations"]
    ]
    missing = [
        f"{label} {name}"
        for db, label in DATABASES
        for name, data in found[db].items()
        if data is None
    ]
    total_seconds = sum(row["seconds"] for files in runs.values() for row in files.values())

    out = [
        f"Last `make proof`: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, on a {os.cpu_count()}-core "
        f"{platform.machine()} machine (Python {platform.python_version()}), {total_seconds / 60:.0f} min of tests.",
        "",
        "Sizes: " + ", ".join(f"{os.environ.get(var, '?')} {what}" for var, what in SIZES) + ".",
        "",
        f"**Invariant violations found: {len(violations)}. Test failures: {failures}.**"
        + (f" Missing figures: {', '.join(missing)}." if missing else ""),
        "",
    ]
    out += [f"- {v}" for v in violations]
    if violations:
        out.append("")

    out += ["### Tests of the proof", ""]
    names = sorted({name for files in runs.values() for name in files})
    rows = []
    for name in names:
        cells = [f"`{name}`"]
        for db, _ in DATABASES:
            row = runs[db].get(name)
            cells.append(
                f"{int(row['tests'] - row['failed'] - row['skipped'])} passed, {int(row['failed'])} failed, "
                f"{row['seconds']:.0f} s"
                if row
                else "not run"
            )
        rows.append(tuple(cells))
    out += table(rows, ("file", *(label for _, label in DATABASES)))

    for name, title in (("storm", "The storm"), ("fault-schedules", "Fault schedules")):
        out += ["", f"### {title}", ""]
        keys: list[str] = []
        for db, _ in DATABASES:
            for key in (found[db][name] or {}).get("counts", {}):
                if key not in keys:
                    keys.append(key)
        rows = [
            (
                key,
                *(
                    str((found[db][name] or {}).get("counts", {}).get(key, "–"))
                    for db, _ in DATABASES
                ),
            )
            for key in keys
        ]
        rows.append(
            ("seconds", *(str((found[db][name] or {}).get("seconds", "–")) for db, _ in DATABASES))
        )
        out += table(rows, ("figure", *(label for _, label in DATABASES)))
    return "\n".join(out), int(bool(failures or violations or missing))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/RELIABILITY.md")
    args = parser.parse_args(argv)
    path = ROOT / args.out
    text = path.read_text()
    if START not in text or END not in text:
        print(f"{path}: the {START} … {END} markers are missing", file=sys.stderr)
        return 1
    block, status = render()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    print(block)
    return status


if __name__ == "__main__":
    sys.exit(main())
