"""make bench-load: load 100,000 realistic lines through `manage.py load_accounts`.

Prints lines/s and peak RSS for a fresh SQLite file and a fresh PostgreSQL database, SQLite's
time against the floor measured in the same run on the same file (`floor`: reading and splitting
the lines, AES-GCM of their tokens and a bare sqlite3 insert of the same rows into the real
table, in one process), and PostgreSQL's time against SQLite's. Not a test. The figures are
written to bench/results/load-*.json (bench/render.py puts them in the README).

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
TARGET_FLOOR_RATIO = 1.2  # SQLite's whole load against the floor below
TARGET_PG_RATIO = 1.5  # PostgreSQL's whole load against SQLite's
TARGET_RSS_MB = 600
LOAD_CHUNK = 4000  # rows a transaction, as accounts.services.preparing.LOAD_CHUNK


def make_file(path: Path, lines: int) -> None:
    from devtools import fakes

    rng = random.Random(1)
    formats = ("positional", "delimited-dash")
    with path.open("w") as out:
        for n in range(lines):
            account = fakes.make_account(rng=rng, email=f"bench{n}@example.com")
            out.write(fakes.render_line(account, formats[n % 2]) + "\n")


def _fields(line: str) -> dict:
    """The values of one bench line, told apart by shape as the parser does (no validation)."""
    parts = line.split("----") if "----" in line else line.split(",")
    found = {}
    for part in parts:
        if part.startswith("eyJ"):
            found["access_token" if part.count(".") == 2 else "session_token"] = part
        elif part.startswith("rt_"):
            found["refresh_token"] = part
        elif part.startswith("app_"):
            found["client_id"] = part
        elif "@" in part:
            found["email"] = part
        elif part:
            found["account_id"] = part
    return found


def floor(path: Path, schema_db: Path, out_db: Path, chunk: int) -> dict:
    """The physical floor of a SQLite load, in one process: read and split the lines, AES-GCM
    their tokens (as the loader seals them: format byte, key id, nonce, bound to the column),
    and insert the same rows (every column the loader writes, hashes and hints included) with a
    bare `sqlite3` executemany, `chunk` rows a transaction, into a table made with the real
    schema's SQL (copied from the migrated `schema_db`: accounts_account and its indexes) under
    the same pragmas as the project's connection. The lookup hashes (HMAC-SHA-256) are computed
    outside the timed parts, and timed apart: the floor has no parser and no hashing."""
    import hmac
    import sqlite3

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    with sqlite3.connect(schema_db) as source:
        schema = [
            sql
            for (sql,) in source.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'accounts_account' "
                "AND sql IS NOT NULL ORDER BY type DESC"
            )
        ]
    db = sqlite3.connect(out_db, isolation_level=None)
    db.executescript(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; "
        "PRAGMA foreign_keys=ON;"
    )
    # The batch the rows belong to: the real table's foreign key is checked at each commit.
    db.execute('CREATE TABLE "accounts_accountbatch" ("id" integer NOT NULL PRIMARY KEY)')
    db.execute('INSERT INTO "accounts_accountbatch" VALUES (1)')
    for sql in schema:
        db.execute(sql)
    columns = (
        "email, access_token, session_token, refresh_token, client_id, account_id, "
        "access_token_hint, session_token_hint, refresh_token_hint, identity_hash, "
        "access_token_hash, session_token_hash, refresh_token_hash, at_email, at_expires_at, "
        "usable, unusable_reason, status, batch_id, created_at, updated_at, attempts, "
        "unknown_attempts, last_error, notes"
    )
    insert = f"INSERT INTO accounts_account ({columns}) VALUES ({', '.join('?' * 25)})"
    key = os.urandom(32)
    aead, hash_key = AESGCM(key), os.urandom(32)
    now = "2026-11-29 12:00:00.000000"
    contexts = {
        name: b"\x02abcd\x00accounts_account." + name.encode()
        for name in ("access_token", "session_token", "refresh_token")
    }
    times = dict.fromkeys(("split", "encrypt", "insert", "hash"), 0.0)

    def seal(text: str, name: str) -> bytes | None:
        if not text:
            return None
        nonce = os.urandom(12)
        return b"\x02abcd" + nonce + aead.encrypt(nonce, text.encode(), contexts[name])

    def digest(value: str | None) -> str | None:
        return hmac.digest(hash_key, value.encode(), "sha256")[:16].hex() if value else None

    def write(lines: list[str]) -> None:
        start = time.perf_counter()
        split = [_fields(line.rstrip("\n")) for line in lines]
        times["split"] += time.perf_counter() - start
        start = time.perf_counter()
        hashes = [
            [digest(f.get(n)) for n in ("email", "access_token", "session_token", "refresh_token")]
            for f in split
        ]
        times["hash"] += time.perf_counter() - start
        start = time.perf_counter()
        rows = []
        for f, h in zip(split, hashes):
            at, st, rt = (f.get(n, "") for n in ("access_token", "session_token", "refresh_token"))
            rows.append(
                (
                    f.get("email", ""),
                    seal(at, "access_token"),
                    seal(st, "session_token"),
                    seal(rt, "refresh_token"),
                    f.get("client_id", ""),
                    f.get("account_id", ""),
                    "…" + at[-4:],
                    "…" + st[-4:],
                    "…" + rt[-4:],
                    *h,
                    f.get("email", ""),
                    now,
                    True,
                    "",
                    "available",
                    1,
                    now,
                    now,
                    0,
                    0,
                    "",
                    "",
                )
            )
        times["encrypt"] += time.perf_counter() - start
        start = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(insert, rows)
        db.execute("COMMIT")
        times["insert"] += time.perf_counter() - start

    start = time.perf_counter()
    with path.open(encoding="utf-8") as stream:
        lines = []
        for line in stream:
            lines.append(line)
            if len(lines) == chunk:
                times["split"] += time.perf_counter() - start
                write(lines)
                lines = []
                start = time.perf_counter()
        times["split"] += time.perf_counter() - start
        if lines:
            write(lines)
    (count,) = db.execute("SELECT COUNT(*) FROM accounts_account").fetchone()
    db.close()
    return {**times, "rows": count}


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


def bench_env(database_url: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "poolsite.settings",
        "POOL_IGNORE_DOTENV": "1",
        "SECRET_KEY": "bench-only",
        "POOL_ENCRYPTION_KEY": BENCH_KEY,
        "DATABASE_URL": database_url,
    }


def run_load(path: Path, database_url: str) -> tuple[float, dict, str]:
    env = {**os.environ, **bench_env(database_url)}
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


def migrate(database_url: str) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0", "--noinput"],
        env={**os.environ, **bench_env(database_url)},
        check=True,
    )


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
    print(
        f"file: {args.lines} lines, {size_mb:.0f} MB ({size_mb * 1e6 / args.lines / 1000:.1f} KB a line)"
    )

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite:///{tmp}/bench.sqlite3"
        migrate(sqlite_url)
        parts = floor(path, Path(tmp) / "bench.sqlite3", Path(tmp) / "floor.sqlite3", LOAD_CHUNK)
        assert parts["rows"] == args.lines, parts
        results.append(("sqlite", run_load(path, sqlite_url)))
    floor_s = parts["split"] + parts["encrypt"] + parts["insert"]
    print(
        f"floor (bare sqlite3, one process): read + split {parts['split']:.2f} s + AES-GCM "
        f"{parts['encrypt']:.2f} s + insert {parts['insert']:.2f} s = {floor_s:.2f} s "
        f"(the lookup hashes, outside it: {parts['hash']:.2f} s)"
    )
    if not args.skip_postgres:
        results.append(("postgresql", run_load(path, fresh_postgres(args.pg_url))))

    seconds = {name: elapsed for name, (elapsed, _, _) in results}
    ok = True
    for name, (elapsed, memory, summary) in results:
        ratio = elapsed / floor_s
        rss_mb = memory["sum_of_peaks_mb"]
        per_process = " + ".join(f"{mb:.0f}" for mb in memory["per_process_peak_mb"])
        versus = (
            f"{ratio:.2f}x the floor"
            if name == "sqlite"
            else f"{elapsed / seconds['sqlite']:.2f}x SQLite's load"
        )
        print(
            f"{name:>10}: {elapsed:.2f} s, {args.lines / elapsed:,.0f} lines/s, "
            f"peak RSS {rss_mb:.0f} MB (sum of {per_process}), {versus} — {summary}"
        )
        row = {
            "what": name,
            "seconds": round(elapsed, 2),
            "lines_per_second": round(args.lines / elapsed),
            "peak_rss_sum_mb": round(rss_mb),
            "peak_rss_per_process_mb": [round(mb) for mb in memory["per_process_peak_mb"]],
            "vs_floor": round(ratio, 2),
            "summary": summary,
        }
        if name != "sqlite":
            row["vs_sqlite"] = round(elapsed / seconds["sqlite"], 2)
        record(
            "load",
            name,
            conditions={
                "lines": args.lines,
                "file_mb": round(size_mb),
                "database": "a fresh, empty database, migrated before the timed load",
                "samples": 1,
                "floor": "bare sqlite3 in one process, same run and file: read + split, AES-GCM "
                f"of the tokens, executemany of the same rows ({LOAD_CHUNK} a transaction) into "
                "the real table and indexes, same pragmas; hashing outside it",
                "peak_memory": "sum of each process's own VmHWM (loader + forked helper), sampled every 20 ms",
            },
            rows=[
                {"what": "floor: read + split the lines", "seconds": round(parts["split"], 2)},
                {"what": "floor: AES-GCM of every token", "seconds": round(parts["encrypt"], 2)},
                {"what": "floor: bare sqlite3 insert", "seconds": round(parts["insert"], 2)},
                {
                    "what": "lookup hashes alone (not in the floor)",
                    "seconds": round(parts["hash"], 2),
                },
                row,
            ],
            out_dir=args.out,
        )
        if name == "sqlite":
            ok &= ratio <= TARGET_FLOOR_RATIO
        else:
            ok &= elapsed / seconds["sqlite"] <= TARGET_PG_RATIO
        ok &= rss_mb < TARGET_RSS_MB
    print(
        f"targets (SQLite within {TARGET_FLOOR_RATIO}x the floor, PostgreSQL within "
        f"{TARGET_PG_RATIO}x SQLite, peak RSS under {TARGET_RSS_MB} MB): {'met' if ok else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
