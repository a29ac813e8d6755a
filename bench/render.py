"""Render the benches' figures (bench/results/*.json) as the README's tables.

    python bench/render.py            # print the tables
    python bench/render.py --readme   # replace each <!-- bench:NAME --> … <!-- /bench:NAME --> block

A table is rendered only from a results file; nothing here is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _load(bench: str) -> list[dict]:
    return [
        json.loads(p.read_text(encoding="utf-8")) for p in sorted(RESULTS.glob(f"{bench}-*.json"))
    ]


def _conditions(doc: dict) -> str:
    c = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in doc["conditions"].items())
    load = " / ".join(str(x) for x in doc["machine"]["load_average_at_end"])
    return f"*{doc['database']}, measured {doc['measured_at']} on {doc['machine']['cpus']} CPUs (load average at the end {load}); {c}.*"


def render_load(docs: list[dict]) -> str:
    lines = [
        "| | time | lines/s | peak RSS (sum of the processes' peaks) | vs floor | vs SQLite |",
        "|---|---|---|---|---|---|",
    ]
    shown = set()
    for doc in docs:
        for row in doc["rows"]:
            if (row["what"], row["seconds"]) in shown:
                continue  # a floor both databases' files carry (the same run)
            shown.add((row["what"], row["seconds"]))
            if "lines_per_second" in row:
                per = " + ".join(str(mb) for mb in row["peak_rss_per_process_mb"])
                lines.append(
                    f"| {row['what']} | {row['seconds']} s | {row['lines_per_second']:,} | "
                    f"{row['peak_rss_sum_mb']} MB ({per}) | {row['vs_floor']}x | "
                    f"{str(row['vs_sqlite']) + 'x' if 'vs_sqlite' in row else ''} |"
                )
            else:
                lines.append(f"| {row['what']} | {row['seconds']} s | | | | |")
    return "\n".join(lines + [""] + [_conditions(d) for d in docs])


def render_table(docs: list[dict]) -> str:
    """Any bench: one table per results file, its columns the rows' keys."""
    out = []
    for doc in docs:
        keys = list(dict.fromkeys(k for row in doc["rows"] for k in row))
        out.append("| " + " | ".join(k.replace("_", " ") for k in keys) + " |")
        out.append("|" + "---|" * len(keys))
        for row in doc["rows"]:
            out.append("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
        out += ["", _conditions(doc), ""]
    return "\n".join(out).rstrip()


RENDERERS = {
    "load": render_load,
    "upload": render_table,
    "webhook": render_table,
    "admin": render_table,
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readme", action="store_true", help="write the tables into README.md")
    args = parser.parse_args()
    tables = {name: render(docs) for name, render in RENDERERS.items() if (docs := _load(name))}
    if not args.readme:
        for name, table in tables.items():
            print(f"## {name}\n\n{table}\n")
        return 0
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    for name, table in tables.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(\n<!-- /bench:{name} -->)", re.S)
        if not pattern.search(text):
            print(f"README.md has no <!-- bench:{name} --> block", file=sys.stderr)
            return 1
        text = pattern.sub(lambda m, t=table: m.group(1) + t + m.group(2), text)
    readme.write_text(text, encoding="utf-8")
    print(f"README.md: {', '.join(tables) or 'no results to render'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
