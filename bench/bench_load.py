"""make bench-load: load 100,000 realistic lines through `manage.py load_accounts`.

Prints lines/s and peak RSS for a fresh SQLite file and a fresh PostgreSQL database, beside the
floor measured in the same run on the same file: reading and splitting the lines alone, and
encrypting their tokens alone. Not a test. The figures are written to bench/results/load-*.json
(bench/render.py puts them in the README).

Peak memory is the SUM of each process's own peak (VmHWM, read from /proc every 20 ms while it
runs): the loader and the helper it forks. Copy-on-write pages they share count twice, so the
sum is an upper bound of what the two held together.

    python bench/bench_load.py [--lines N] [--skip-postgres] [--pg-url URL] [--out DIR]
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_KEY = "YmVuY2gtb25seS1rZXktMzItYnl0ZXMtbG9uZy4uLi4="
TARGET_SECONDS = 10.0
TARGET_RATIO = 3.0
TARGET_RSS_MB = 600


def make_file(path: Path, lines: int) -> None:
    from devtools import fakes

    rng = random.Random(1)
    formats = ("positional", "delimited-dash")
    with path.open("w") as out:
        for n in range(lines):
            account = fakes.make_account(rng=rng, email=f"bench{n}@example.com")
            out.write(fakes.render_line(account, formats[n % 2]) + "\n")


def floor_split(path: Path) -> float:
    start = time.perf_counter()
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            line = line.rstrip("\n")
            line.split("----") if "----" in line else line.split(",")
    return time.perf_counter() - start


def floor_encrypt(path: Path) -> float:
    """AES-256-GCM of every token of every line, the same primitive the loader uses."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    tokens = []
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            parts = (
                line.rstrip("\n").split("----") if "----" in line else line.rstrip("\n").split(",")
            )
            tokens.extend(p.encode() for p in parts if p.startswith(("eyJ", "rt_")))
    aead = AESGCM(os.urandom(32))
    start = time.perf_counter()
    for token in tokens:
        aead.encrypt(os.urandom(12), token, b"\x01abcd")
    return time.perf_counter() - start


def _hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as children:
                kids = [int(k) for k in children.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            kids = []
        found += kids
        todo += kids
    return found


class PeakWatcher(threading.Thread):
    """Each process's own peak RSS (VmHWM, which only grows), for a process and its descendants,
    sampled every `interval` seconds until stopped; `peaks_mb` maps pid to its last-read peak."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peaks_kb: dict[int, int] = {}
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            for pid in [self.pid, *_descendants(self.pid)]:
                if (kb := _hwm_kb(pid)) is not None:
                    self.peaks_kb[pid] = max(kb, self.peaks_kb.get(pid, 0))
            self._stopping.wait(self.interval)

    def stop(self) -> dict[int, float]:
        self._stopping.set()
        self.join()
        return {pid: kb / 1024 for pid, kb in self.peaks_kb.items()}


def run_load(path: Path, database_url: str) -> tuple[float, dict, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "poolsite.settings",
        "POOL_IGNORE_DOTENV": "1",
        "SECRET_KEY": "bench-only",
        "POOL_ENCRYPTION_KEY": BENCH_KEY,
        "DATABASE_URL": database_url,
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0", "--noinput"], env=env, check=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*manage, "load_accounts", str(path)], env=env, stdout=subprocess.PIPE, text=True
    )
    watcher = PeakWatcher(proc.pid)
    watcher.start()
    out = proc.stdout.read()
    # Read the peaks before reaping: a zombie's /proc status no longer has VmHWM.
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    peaks = watcher.stop()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (
        0,
        1,
    ):  # 1: some lines were invalid, reported below
        raise SystemExit(f"load_accounts failed:\n{out[-2000:]}")
    memory = {
        "sum_of_peaks_mb": sum(peaks.values()),
        "per_process_peak_mb": sorted(peaks.values(), reverse=True),
        # What this bench reported before: the largest single process's peak.
        "largest_process_peak_mb": usage.ru_maxrss / 1024,
    }
    return elapsed, memory, out.strip().splitlines()[-1]


def fresh_postgres(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bench_pool")
        conn.execute("CREATE DATABASE bench_pool")
    return url.rsplit("/", 1)[0] + "/bench_pool"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the figures (default bench/results)"
    )
    args = parser.parse_args()
    from bench.results import record

    cache = ROOT / "bench" / "out"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"lines_{args.lines}.txt"
    if not path.exists():
        print(f"generating {args.lines} lines into {path} …", flush=True)
        make_file(path, args.lines)
    size_mb = path.stat().st_size / 1e6

    split_s = floor_split(path)
    encrypt_s = floor_encrypt(path)
    floor = split_s + encrypt_s
    print(
        f"file: {args.lines} lines, {size_mb:.0f} MB ({size_mb * 1e6 / args.lines / 1000:.1f} KB a line)"
    )
    print(f"floor: split {split_s:.2f} s + encrypt {encrypt_s:.2f} s = {floor:.2f} s")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(("sqlite", run_load(path, f"sqlite:///{tmp}/bench.sqlite3")))
    if not args.skip_postgres:
        results.append(("postgresql", run_load(path, fresh_postgres(args.pg_url))))

    ok = True
    for name, (elapsed, memory, summary) in results:
        ratio = elapsed / floor
        rss_mb = memory["sum_of_peaks_mb"]
        per_process = " + ".join(f"{mb:.0f}" for mb in memory["per_process_peak_mb"])
        print(
            f"{name:>10}: {elapsed:.2f} s, {args.lines / elapsed:,.0f} lines/s, "
            f"peak RSS {rss_mb:.0f} MB (sum of {per_process}), {ratio:.1f}x floor — {summary}"
        )
        record(
            "load",
            name,
            conditions={
                "lines": args.lines,
                "file_mb": round(size_mb),
                "database": "a fresh, empty database, migrated before the timed load",
                "samples": 1,
                "peak_memory": "sum of each process's own VmHWM (loader + forked helper), sampled every 20 ms",
            },
            rows=[
                {"what": "floor: read + split the lines", "seconds": round(split_s, 2)},
                {"what": "floor: AES-GCM of every token", "seconds": round(encrypt_s, 2)},
                {
                    "what": name,
                    "seconds": round(elapsed, 2),
                    "lines_per_second": round(args.lines / elapsed),
                    "peak_rss_sum_mb": round(rss_mb),
                    "peak_rss_per_process_mb": [round(mb) for mb in memory["per_process_peak_mb"]],
                    "vs_floor": round(ratio, 1),
                    "summary": summary,
                },
            ],
            out_dir=args.out,
        )
        if name == "sqlite":
            ok &= elapsed < TARGET_SECONDS * args.lines / 100_000 and ratio < TARGET_RATIO
        ok &= rss_mb < TARGET_RSS_MB
    print(
        f"targets (SQLite under {TARGET_SECONDS:.0f} s per 100,000 lines and under {TARGET_RATIO:.0f}x floor; "
        f"peak RSS under {TARGET_RSS_MB} MB): {'met' if ok else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
