"""make bench-load: load 100,000 realistic lines through `manage.py load_accounts`.

Prints lines/s and peak RSS for a fresh SQLite file and a fresh PostgreSQL database, beside the
floor measured in the same run on the same file: reading and splitting the lines alone, and
encrypting their tokens alone. Not a test: the figures go into the README by hand.

    python bench/bench_load.py [--lines N] [--skip-postgres] [--pg-url URL]
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_KEY = "YmVuY2gtb25seS1rZXktMzItYnl0ZXMtbG9uZy4uLi4="
TARGET_SECONDS = 10.0
TARGET_RATIO = 3.0
TARGET_RSS_MB = 600


def make_file(path: Path, lines: int) -> None:
    from tests import fakes

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
            parts = line.rstrip("\n").split("----") if "----" in line else line.rstrip("\n").split(",")
            tokens.extend(p.encode() for p in parts if p.startswith(("eyJ", "rt_")))
    aead = AESGCM(os.urandom(32))
    start = time.perf_counter()
    for token in tokens:
        aead.encrypt(os.urandom(12), token, b"\x01abcd")
    return time.perf_counter() - start


def run_load(path: Path, database_url: str) -> tuple[float, float, str]:
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
    proc = subprocess.Popen([*manage, "load_accounts", str(path)], env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):  # 1: some lines were invalid, reported below
        raise SystemExit(f"load_accounts failed:\n{out[-2000:]}")
    # ru_maxrss here covers the loader and its forked helper (measured: about half each).
    return elapsed, usage.ru_maxrss / 1024, out.strip().splitlines()[-1]


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
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()

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
    print(f"file: {args.lines} lines, {size_mb:.0f} MB ({size_mb * 1e6 / args.lines / 1000:.1f} KB a line)")
    print(f"floor: split {split_s:.2f} s + encrypt {encrypt_s:.2f} s = {floor:.2f} s")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(("sqlite", run_load(path, f"sqlite:///{tmp}/bench.sqlite3")))
    if not args.skip_postgres:
        results.append(("postgresql", run_load(path, fresh_postgres(args.pg_url))))

    ok = True
    for name, (elapsed, rss_mb, summary) in results:
        ratio = elapsed / floor
        print(
            f"{name:>10}: {elapsed:.2f} s, {args.lines / elapsed:,.0f} lines/s, peak RSS {rss_mb:.0f} MB, "
            f"{ratio:.1f}x floor — {summary}"
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
