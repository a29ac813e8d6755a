"""Where the benches write their figures, so the README's tables are rendered, not hand-copied.

Each run of a bench writes bench/results/<bench>-<database>.json: when, on what machine, under
which conditions, and one row per figure. `python bench/render.py --readme` puts the tables into
README.md between its `<!-- bench:NAME -->` markers.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def record(
    bench: str, database: str, *, conditions: dict, rows: list[dict], out_dir: Path | None = None
) -> Path:
    out_dir = out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{bench}-{database}.json"
    document = {
        "bench": bench,
        "database": database,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "conditions": conditions,
        "rows": rows,
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"figures written to {path}")
    return path
