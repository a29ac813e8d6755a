"""make bench-upload: how soon staff see an upload's preview, and how often a big load's progress
moves, through the path the admin takes.

The upload is staged with `account_batch_stage` (what the admin's upload view calls: the text
stored encrypted, the work queued), and a real `manage.py db_worker --interval 0.2` (as `make run`
starts it) reads and loads it, while this process polls the batch row every 20 ms for its status
and progress stamp (`progress_at`, written by the worker after each chunk). Per database:

- preview of a 20 MB upload (POOL_UPLOAD_MAX_BYTES, the most the admin takes) of new accounts:
  seconds from the upload to "awaiting confirmation", staging included;
- the same upload again once the pool holds every account in it (all duplicates);
- a load of --lines lines (100,000 by default; staged directly, past the admin's size limit),
  previewed then confirmed: the longest gap between two progress stamps the worker wrote while
  reading and while saving it (from its claim of the batch on), and how long each took.

Floor, measured in the same run in this process on the same 20 MB: the parser alone
(`parse_lines` over the text), which no preview can skip. Not a test; the figures go to
bench/results/upload-*.json (bench/render.py puts them in the README).

Lines are the bench's realistic fake material (all four secrets, ~4 KB a line, from
tests/fakes.py): the big load's from bench/bench_load.py's `make_file`, the upload's of other
accounts.

    python bench/bench_upload.py [--lines N] [--upload-mb MB] [--skip-postgres] [--pg-url URL] [--out DIR]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_load import BENCH_KEY, fresh_postgres, make_file  # noqa: E402

PREVIEW_TARGET_S = 3.0
PROGRESS_TARGET_S = 1.0
WORKER_INTERVAL = "0.2"
POLL_S = 0.02


def lines_file(lines: int) -> Path:
    cache = ROOT / "bench" / "out"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"lines_{lines}.txt"
    if not path.exists():
        print(f"generating {lines} lines into {path} …", flush=True)
        make_file(path, lines)
    return path


def upload_text(megabytes: float) -> str:
    """Whole lines up to `megabytes` MiB, of accounts the big load's file does not hold (another
    seed, other emails), made once into bench/out/."""
    path = ROOT / "bench" / "out" / f"upload_{megabytes:g}mb.txt"
    if not path.exists():
        import random

        from devtools import fakes

        rng, size, n = random.Random(2), int(megabytes * 1024 * 1024), 0
        formats = ("positional", "delimited-dash")
        with path.open("w", encoding="utf-8") as out:
            while True:
                account = fakes.make_account(rng=rng, email=f"upload{n}@example.com")
                line = fakes.render_line(account, formats[n % 2]) + "\n"
                size -= len(line.encode())
                if size < 0:
                    break
                out.write(line)
                n += 1
    return path.read_text(encoding="utf-8")


# --- One database, in a process of its own (Django is set up once per process) ---------------


def env_for(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "poolsite.settings",
        "POOL_IGNORE_DOTENV": "1",
        "SECRET_KEY": "bench-only",
        "POOL_ENCRYPTION_KEY": BENCH_KEY,
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
    }


class Worker:
    def __init__(self, env: dict[str, str], log: Path):
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "db_worker",
                "--no-startup-delay",
                "--interval",
                WORKER_INTERVAL,
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def watch(batch_id: int, until: set[str], timeout: float) -> dict:
    """Poll the batch row until its status is in `until`: when it got there, and every progress
    stamp seen on the way (never the uploaded text: only the small columns are read)."""
    from accounts.models import AccountBatch

    stamps, seen = [], None
    deadline = time.monotonic() + timeout
    while True:
        status, lines_read, progress_at = AccountBatch.objects.filter(pk=batch_id).values_list(
            "status", "lines_read", "progress_at"
        )[0]
        if progress_at != seen:
            seen = progress_at
            stamps.append((progress_at.timestamp(), status, lines_read))
        if status in until:
            return {"status": status, "at": time.time(), "stamps": stamps}
        if time.monotonic() > deadline:
            raise SystemExit(f"batch {batch_id} still {status} after {timeout:.0f} s")
        time.sleep(POLL_S)


def gaps(stamps: list, status: str, *, staged: float) -> list[float]:
    """Seconds between consecutive progress stamps the worker wrote while in `status`, from the
    first (its claim of the batch) to the one that ended that phase: the stamp written when the
    upload was staged (`staged`, before any worker had it) is not one of them."""
    times = [t for t, s, _ in stamps if s == status and t != staged]
    end = next((t for t, s, _ in stamps if times and t > times[-1]), None)
    if end is not None:
        times.append(end)
    return [b - a for a, b in zip(times, times[1:])]


def run_one(database_url: str, upload_mb: float, lines: int) -> dict:
    import django

    os.environ.update(env_for(database_url))
    django.setup()
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from accounts.models import Account, BatchStatus
    from accounts.parser import parse_lines
    from accounts.services import (
        account_batch_cancel,
        account_batch_confirm,
        account_batch_load,
        account_batch_stage,
        text_lines,
    )

    env = env_for(database_url)
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0", "--noinput"],
        env=env,
        check=True,
    )
    big = lines_file(lines)
    content = upload_text(upload_mb)
    upload_lines = content.count("\n")

    start = time.perf_counter()
    for _ in parse_lines(
        text_lines(content),
        now=timezone.now(),
        min_at_lifetime=timedelta(hours=settings.POOL_MIN_AT_LIFETIME_HOURS),
    ):
        pass
    floor_parse = time.perf_counter() - start

    result = {
        "upload_mb": round(len(content.encode()) / 1024 / 1024, 1),
        "upload_lines": upload_lines,
        "floor_parse_s": floor_parse,
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    worker = Worker(env, workdir / "db_worker.log")
    try:
        # Warm-up: the worker polls, has imported everything and holds a connection.
        warm = account_batch_stage(content=content.splitlines()[0] + "\n", label="warm-up")
        watch(warm.pk, {BatchStatus.PENDING, BatchStatus.FAILED}, 60)
        account_batch_cancel(batch_id=warm.pk)

        def preview(label: str) -> tuple[float, float, dict]:
            began = time.time()
            batch = account_batch_stage(content=content, label=label)
            staged = time.time() - began
            seen = watch(batch.pk, {BatchStatus.PENDING, BatchStatus.FAILED}, 300)
            if seen["status"] != BatchStatus.PENDING:
                raise SystemExit(f"preview {label} failed: see {workdir / 'db_worker.log'}")
            batch.refresh_from_db(fields=["created_count", "duplicate_count", "invalid_count"])
            account_batch_cancel(batch_id=batch.pk)
            counts = (batch.created_count, batch.duplicate_count, batch.invalid_count)
            return seen["at"] - began, staged, counts

        result["preview_new_s"], result["stage_new_s"], counts = preview("new")
        assert counts == (upload_lines, 0, 0), counts
        # The pool gets every account of the upload (untimed, in this process), then the same
        # upload again: all duplicates.
        account_batch_load(lines=text_lines(content), label="pool", source="command")
        assert Account.objects.count() == upload_lines
        result["preview_duplicates_s"], result["stage_duplicates_s"], counts = preview("again")
        assert counts == (0, upload_lines, 0), counts

        with big.open(encoding="utf-8") as stream:
            text = stream.read()
        began = time.time()
        batch = account_batch_stage(content=text, label="big")
        del text
        result["stage_big_s"] = time.time() - began
        staged = batch.progress_at.timestamp()
        read = watch(batch.pk, {BatchStatus.PENDING, BatchStatus.FAILED}, 1800)
        claimed = next(t for t, s, _ in read["stamps"] if t != staged)
        result["big_claim_s"] = claimed - (began + result["stage_big_s"])
        account_batch_confirm(batch_id=batch.pk)
        confirmed = time.time()
        saved = watch(batch.pk, {BatchStatus.LOADED, BatchStatus.FAILED}, 1800)
        if saved["status"] != BatchStatus.LOADED:
            raise SystemExit(f"the big load failed: see {workdir / 'db_worker.log'}")
        result["big_preview_s"] = read["at"] - began
        result["big_load_s"] = saved["at"] - confirmed
        result["preview_gaps"] = gaps(read["stamps"], BatchStatus.PREVIEWING, staged=staged)
        result["load_gaps"] = gaps(saved["stamps"], BatchStatus.LOADING, staged=staged)
        result["big_created"] = Account.objects.filter(batch_id=batch.pk).count()
    finally:
        worker.stop()
    return result


# --- The run: each database in turn ---------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--upload-mb", type=float, default=20.0)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: one database
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.upload_mb, args.lines)))
        return 0

    from bench.results import record

    lines_file(args.lines)  # generated once, outside the timed part
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        runs.append(("sqlite", f"sqlite:///{tmp}/bench.sqlite3"))
        if not args.skip_postgres:
            runs.append(("postgresql", fresh_postgres(args.pg_url)))
        results = {}
        for name, url in runs:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    url,
                    "--lines",
                    str(args.lines),
                    "--upload-mb",
                    str(args.upload_mb),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])

    ok = True
    for name, r in results.items():
        worst_preview = max(r["preview_gaps"], default=0)
        worst_load = max(r["load_gaps"], default=0)
        print(
            f"{name:>10}: {r['upload_mb']} MB upload ({r['upload_lines']} lines; floor: the parser "
            f"alone {r['floor_parse_s']:.2f} s): preview {r['preview_new_s']:.2f} s new "
            f"(staging {r['stage_new_s']:.2f} s), {r['preview_duplicates_s']:.2f} s all duplicates"
        )
        print(
            f"{'':>10}  {args.lines:,} lines: staged in {r['stage_big_s']:.1f} s, claimed by the "
            f"worker {r['big_claim_s']:.2f} s later; read in {r['big_preview_s']:.1f} s (staging "
            f"included), longest gap between "
            f"progress stamps {worst_preview:.2f} s (median {statistics.median(r['preview_gaps'] or [0]):.2f}); "
            f"saved in {r['big_load_s']:.1f} s, longest gap {worst_load:.2f} s "
            f"(median {statistics.median(r['load_gaps'] or [0]):.2f})"
        )
        for phase in ("preview_gaps", "load_gaps"):
            print(f"{'':>10}  {phase.replace('_', ' ')}: {' '.join(f'{g:.2f}' for g in r[phase])}")
        if name == "sqlite":
            ok &= max(r["preview_new_s"], r["preview_duplicates_s"]) < PREVIEW_TARGET_S
        ok &= max(worst_preview, worst_load) < PROGRESS_TARGET_S
        record(
            "upload",
            name,
            conditions={
                "upload": f"{r['upload_mb']} MB, {r['upload_lines']} lines of all four secrets",
                "big_load": f"{args.lines:,} lines, staged directly (past the admin's 20 MB limit)",
                "worker": f"one manage.py db_worker --interval {WORKER_INTERVAL}, started before, warmed up",
                "timing": "from the call that stages the upload to the batch row's status, polled every 20 ms",
                "floor": "the parser alone over the same 20 MB, in the bench process",
                "samples": 1,
            },
            rows=[
                {"what": "floor: the parser alone, 20 MB", "seconds": round(r["floor_parse_s"], 2)},
                {
                    "what": "preview, 20 MB of new accounts",
                    "seconds": round(r["preview_new_s"], 2),
                    "staging_seconds": round(r["stage_new_s"], 2),
                },
                {
                    "what": "preview, 20 MB all duplicates of the pool",
                    "seconds": round(r["preview_duplicates_s"], 2),
                    "staging_seconds": round(r["stage_duplicates_s"], 2),
                },
                {
                    "what": f"staging {args.lines:,} lines, then the worker's claim",
                    "seconds": round(r["stage_big_s"], 1),
                    "claimed_after_seconds": round(r["big_claim_s"], 2),
                },
                {
                    "what": f"preview of {args.lines:,} lines (staging included)",
                    "seconds": round(r["big_preview_s"], 1),
                    "longest_progress_gap": round(max(r["preview_gaps"], default=0), 2),
                    "median_progress_gap": round(statistics.median(r["preview_gaps"] or [0]), 2),
                },
                {
                    "what": f"load of {args.lines:,} lines",
                    "seconds": round(r["big_load_s"], 1),
                    "longest_progress_gap": round(max(r["load_gaps"], default=0), 2),
                    "median_progress_gap": round(statistics.median(r["load_gaps"] or [0]), 2),
                },
            ],
            out_dir=args.out,
        )
    print(
        f"targets (SQLite preview of a 20 MB upload under {PREVIEW_TARGET_S:.0f} s, new or all "
        f"duplicates; progress at least every {PROGRESS_TARGET_S:.0f} s): {'met' if ok else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
