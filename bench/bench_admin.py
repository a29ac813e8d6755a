"""make bench-admin: the admin pages staff look at, timed against a pool of 1,000,000 accounts.

Seeds a SQLite file and a PostgreSQL database (`bench_admin`) with N accounts and M import
attempts of realistic shape, then times, in-process with Django's test client logged in as a
superuser, the server time of:

- the admin home (the dashboard), `/admin/`;
- the pool list: first page, a status-filtered page, an email search;
- the import-attempt history: first page and outcome-filtered;
- `GET /api/stats/`, if that URL is routed.

Server time is the whole Django stack in-process (middleware, view, queries, template rendering),
without a WSGI server or network. Each page gets one warm-up request, then --repeat timed requests (min / median / max ms), then
one more request under CaptureQueriesContext for its query count and SQL time. Target (from the
issue): median under 300 ms on both databases. For every
page over 300 ms the slowest query of that request is printed with its plan (EXPLAIN (ANALYZE,
BUFFERS) on PostgreSQL, EXPLAIN QUERY PLAN on SQLite), for whoever fixes it. Not a test: the
figures are written to bench/results/admin-*.json (bench/render.py puts them in the README).
Beside each page's median is its floor, measured in the same run: the page's own SELECTs,
with their own parameters, run bare on the same connection, so what the page adds over its
queries is visible.

    python bench/bench_admin.py [--accounts N] [--attempts N] [--repeat N] [--keep] [--queries]
        [--skip-sqlite] [--skip-postgres] [--pg-url URL]

--queries also lists every query of every page with its time.

Seeding a million rows takes minutes, so --keep reuses bench/out/bench_admin.sqlite3 and the
PostgreSQL database `bench_admin` from an earlier run when they hold exactly N accounts and M
attempts of the current seed version (migrations are applied to them either way); without --keep
both are dropped and seeded afresh. The SQLite file at 1,000,000 accounts is several GB.

What the seed is, and why it is honest enough:
- rows are written straight into the tables (executemany in chunks on SQLite, COPY on
  PostgreSQL), with every CHECK, UNIQUE and foreign-key constraint of the models satisfied and
  all indexes in place, then ANALYZEd (PostgreSQL: VACUUM ANALYZE, the state autovacuum would reach; it is off
  on the bench server);
- tokens are real AES-256-GCM ciphertext of realistic size (a ~1.3 KB access token, a ~2.5 KB
  session token, a refresh token), but ONE ciphertext per token column, encrypted once and reused
  for every row: the timed pages never decrypt more than a page of rows, so per-row ciphertext
  would only make seeding slower, not the pages. Lookup hashes are unique per row (sha256 of the
  column and row number, 32 hex characters, the width the app stores);
- emails are `userN@example.com` for account id N; statuses 70% consumed (consumed_at over the
  last 60 days), 20% available (some flagged unusable, some waiting for a retry), 5% rejected,
  3% retired, 2% reserved under a lease; about 300 batches per million accounts;
- attempts spread over the last 60 days, 85% consumed, 8% rejected, 6% unknown, 1% config
  error, grouped into runs of ~300 (a few thousand runs), each run with its webhook events.
"""

import argparse
import hashlib
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_KEY = "YmVuY2gtb25seS1rZXktMzItYnl0ZXMtbG9uZy4uLi4="
TARGET_MS = 300.0
# Bump when the shape of the seed changes, so --keep does not reuse a database seeded otherwise.
SEED_VERSION = 3
SEED_MARKER = f"bench_admin seed v{SEED_VERSION}"
PG_DB = os.environ.get("BENCH_ADMIN_PG_DB", "bench_admin")  # another name keeps parallel runs apart
SQLITE_PATH = ROOT / "bench" / "out" / "bench_admin.sqlite3"
CHUNK = 20_000
SQL_SHOWN = 3000  # characters of a slow query printed

PAGES = [
    ("dashboard", "/admin/"),
    ("pool: first page", "/admin/accounts/account/"),
    ("pool: available", "/admin/accounts/account/?status__exact=available"),
    ("pool: search", "/admin/accounts/account/?q=user12345"),
    ("attempts: first page", "/admin/webhooks/importattempt/"),
    ("attempts: unknown", "/admin/webhooks/importattempt/?outcome__exact=unknown"),
    ("api: stats", "/api/stats/"),  # timed only if routed
    ("batches and suppliers", "/admin/webhooks/followedteam/batches/"),
]
OPTIONAL_PAGES = {"/api/stats/"}


# --- Databases (parent process: no Django here) ---------------------------------------------


def pg_bench_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + PG_DB


def pg_reusable(url: str, accounts: int, attempts: int) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [PG_DB],
        ).fetchone()
    if not row or row[0] != SEED_MARKER:
        return False
    try:
        with psycopg.connect(pg_bench_url(url)) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM accounts_account), (SELECT count(*) FROM webhooks_importattempt)"
            ).fetchone()
    except psycopg.Error:
        return False
    return counts == (accounts, attempts)


def pg_fresh(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_DB}")


def sqlite_reusable(path: Path, accounts: int, attempts: int) -> bool:
    import sqlite3

    if not path.exists():
        return False
    conn = sqlite3.connect(path)
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] != SEED_VERSION:
            return False
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM accounts_account), (SELECT count(*) FROM webhooks_importattempt)"
        ).fetchone()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return counts == (accounts, attempts)


def sqlite_fresh(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def django_env(database_url: str) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "poolsite.settings",
        "POOL_IGNORE_DOTENV": "1",
        "SECRET_KEY": "bench-only",
        "POOL_ENCRYPTION_KEY": BENCH_KEY,
        "DATABASE_URL": database_url,
        # The test client's requests come from "testserver".
        "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
    }


def run_database(kind: str, args) -> bool:
    if kind == "sqlite":
        url = f"sqlite:///{SQLITE_PATH}"
        reuse = args.keep and sqlite_reusable(SQLITE_PATH, args.accounts, args.attempts)
        if not reuse:
            sqlite_fresh(SQLITE_PATH)
    else:
        url = pg_bench_url(args.pg_url)
        reuse = args.keep and pg_reusable(args.pg_url, args.accounts, args.attempts)
        if not reuse:
            pg_fresh(args.pg_url)
    env = django_env(url)
    manage = [sys.executable, str(ROOT / "manage.py")]
    start = time.perf_counter()
    if subprocess.run([*manage, "migrate", "-v0", "--noinput"], env=env).returncode != 0:
        print(f"{kind}: manage.py migrate failed (see above): not timed", flush=True)
        return False
    print(
        f"\n=== {kind}: migrate {time.perf_counter() - start:.1f} s; "
        f"{'reusing the seeded database (--keep)' if reuse else 'seeding afresh'}",
        flush=True,
    )
    child = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--accounts",
        str(args.accounts),
        "--attempts",
        str(args.attempts),
        "--repeat",
        str(args.repeat),
    ]
    if args.queries:
        child.append("--queries")
    if args.out:
        child += ["--out", str(args.out)]
    if not reuse:
        child.append("--seed")
    if subprocess.run(child, env=env).returncode != 0:
        print(f"{kind}: the bench failed (see above)", flush=True)
        return False
    return True


# --- Seeding (child process, Django set up) -------------------------------------------------


def digest(tag: bytes, n: int) -> str:
    return hashlib.sha256(b"%s:%d" % (tag, n)).hexdigest()[:32]


class Seeder:
    """Writes rows into the bench database; `ts` and `uid` adapt values to the backend."""

    def __init__(self, kind: str, now: datetime):
        self.kind = kind
        self.now = now
        if kind == "sqlite":
            import sqlite3

            self.conn = sqlite3.connect(SQLITE_PATH, isolation_level=None)
            # Bulk-load settings for this connection only; WAL is restored at the end.
            self.conn.execute("PRAGMA journal_mode=OFF")
            self.conn.execute("PRAGMA synchronous=OFF")
            self.conn.execute(
                "PRAGMA cache_size=-1000000"
            )  # 1 GB: the unique hash indexes stay cached
        else:
            import psycopg

            self.conn = psycopg.connect(os.environ["DATABASE_URL"])
            self.conn.execute("SET synchronous_commit = off")

    # Adapters: SQLite stores naive UTC text (as Django writes it) and UUIDs as 32 hex characters.
    def ts(self, value: datetime | None):
        if value is None or self.kind != "sqlite":
            return value
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")

    def uid(self, value: uuid.UUID | None):
        if value is None or self.kind != "sqlite":
            return value
        return value.hex

    def insert(self, table: str, columns: tuple[str, ...], rows) -> int:
        from django.apps import apps

        model = next(m for m in apps.get_models() if m._meta.db_table == table)
        columns, rows = with_defaults(model, columns, rows)
        count = 0
        if self.kind == "sqlite":
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            rows = iter(rows)
            while chunk := list(itertools.islice(rows, CHUNK)):
                self.conn.execute("BEGIN")
                self.conn.executemany(sql, chunk)
                self.conn.execute("COMMIT")
                count += len(chunk)
        else:
            with self.conn.cursor() as cur:
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                        count += 1
            self.conn.commit()
        return count

    def execute(self, sql: str) -> None:
        if self.kind == "sqlite":
            self.conn.execute(sql)
        else:
            self.conn.execute(sql)
            self.conn.commit()

    def finish(self, tables: list[str]) -> None:
        if self.kind == "sqlite":
            self.conn.execute("ANALYZE")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA user_version = {SEED_VERSION}")
            self.conn.close()
            return
        for table in tables:  # ids were given explicitly: move the identity sequences past them
            self.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        self.conn.commit()
        self.conn.autocommit = True
        self.conn.execute("SET maintenance_work_mem = '512MB'")
        for table in tables:
            self.conn.execute(f"VACUUM (ANALYZE) {table}")
        self.conn.execute(f"COMMENT ON DATABASE {PG_DB} IS '{SEED_MARKER}'")
        self.conn.close()


def sample_ciphertexts() -> dict[str, bytes]:
    """One real ciphertext per token column, of realistic size, reused for every row.

    Honest for these pages: they decrypt at most one page of rows (to mask the tokens), so what
    matters is the size of the rows, not that each row's ciphertext differs. The lookup hashes,
    which the unique indexes see, are unique per row.
    """
    from accounts import crypto
    from accounts.models import Account
    from accounts.tokens import mask
    from devtools import fakes

    material = fakes.make_account(rng=random.Random(1), email="user1@example.com")
    return {
        **{
            name: crypto.encrypt(material[name], context=Account._meta.get_field(name).context)
            for name in ("access_token", "session_token", "refresh_token")
        },
        # The hint stored beside each token when it is sealed (what the lists show).
        **{
            f"{name}_hint": mask(material[name])
            for name in ("access_token", "session_token", "refresh_token")
        },
    }


ACCOUNT_COLUMNS = (
    "id",
    "email",
    "access_token",
    "session_token",
    "refresh_token",
    "client_id",
    "account_id",
    "identity_hash",
    "access_token_hash",
    "session_token_hash",
    "refresh_token_hash",
    "at_email",
    "at_expires_at",
    "usable",
    "unusable_reason",
    "status",
    "created_at",
    "updated_at",
    "attempts",
    "unknown_attempts",
    "retry_after",
    "last_error",
    "lease_id",
    "lease_expires_at",
    "consumed_at",
    "notes",
    "batch_id",
    "access_token_hint",
    "session_token_hint",
    "refresh_token_hint",
)


def with_defaults(model, columns: tuple[str, ...], rows):
    """The columns and rows completed with every other column's model default, so the seed keeps
    up with fields added later (the database has no defaults of its own: Django fills them)."""
    from django.db import connection

    extra = [f for f in model._meta.concrete_fields if f.column not in columns]
    values = tuple(f.get_db_prep_save(f.get_default(), connection) for f in extra)
    if connection.vendor == "postgresql":  # COPY takes the JSON columns' text
        values = tuple(json.dumps(v.obj) if hasattr(v, "obj") else v for v in values)
    return (*columns, *(f.column for f in extra)), (tuple(row) + values for row in rows)


def batch_count(accounts: int) -> int:
    return max(1, round(accounts / 3333))  # about 300 per million


def seed_batches(s: Seeder, accounts: int) -> int:
    n_batches = batch_count(accounts)
    start = s.now - timedelta(days=120)
    span = timedelta(days=120) - timedelta(hours=1)

    def rows():
        for b in range(1, n_batches + 1):
            created = start + span * ((b - 1) / n_batches)
            size = b * accounts // n_batches - (b - 1) * accounts // n_batches
            source = "admin" if b % 3 else "command"
            yield (
                b,
                f"import {created:%Y-%m-%d} #{b}",
                source,
                "loaded",
                f"accounts-{b}.txt" if source == "admin" else "",
                None,
                s.ts(created),
                s.ts(created + timedelta(seconds=5 + size // 10_000)),
                size,
                b % 7,
                b % 5,
                size // 100,
                None,
                f"supplier-{b % 6}",
            )

    columns = (
        "id",
        "label",
        "source",
        "status",
        "filename",
        "content",
        "created_at",
        "finished_at",
        "created_count",
        "duplicate_count",
        "invalid_count",
        "flagged_count",
        "loaded_by_id",
        "supplier",  # six suppliers: the batches page rolls each up over about 50 batches
    )
    return s.insert("accounts_accountbatch", columns, rows())


def seed_accounts(s: Seeder, accounts: int, cipher: dict[str, bytes]) -> dict[str, list[int]]:
    """Insert the accounts and the consumption rollup; return the ids of each status (and of those waiting for a retry)."""
    from django.utils import timezone

    rng = random.Random(2)
    now, n_batches = s.now, batch_count(accounts)
    start, span = now - timedelta(days=120), timedelta(days=120) - timedelta(hours=1)
    window = now - timedelta(days=60)
    leases = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(20)]
    ids: dict[str, list[int]] = {
        k: [] for k in ("consumed", "available", "rejected", "retired", "reserved", "retry")
    }
    at_c, st_c, rt_c = cipher["access_token"], cipher["session_token"], cipher["refresh_token"]
    at_h, st_h, rt_h = (
        cipher["access_token_hint"],
        cipher["session_token_hint"],
        cipher["refresh_token_hint"],
    )
    per_day: Counter = Counter()  # the consumption rollup, as account_settle_consumed counts it
    rejections = (
        "400: 账号已在其他 Team 中",
        "400: invalid access token",
        "400: account already present",
    )

    def rows():
        for n in range(1, accounts + 1):
            b = (n - 1) * n_batches // accounts + 1
            first = (b - 1) * accounts // n_batches + 1
            created = (
                start + span * ((b - 1) / n_batches) + timedelta(milliseconds=10 * (n - first))
            )
            email = f"user{n}@example.com"
            # Tokens: most accounts have an AT; half an ST; 40% an RT with its client id.
            has_at = rng.random() < 0.95
            has_st = not has_at or rng.random() < 0.5
            has_rt = rng.random() < 0.4
            r = rng.random()
            usable, reason, attempts, unknown, retry_after, last_error = True, "", 0, 0, None, ""
            lease_id = lease_expires = consumed_at = None
            notes = ""
            at_expires = created + timedelta(days=10)
            if r < 0.70:
                status = "consumed"
                low = max(created, window)
                consumed_at = low + (now - low) * rng.random()
                per_day[timezone.localdate(consumed_at)] += 1
                attempts = 1 if rng.random() < 0.9 else 2
                updated = consumed_at
            elif r < 0.90:
                status = "available"
                updated = created
                q = rng.random()
                if (
                    q < 0.05
                ):  # flagged at load time: an AT about to expire, nothing to renew it with
                    usable, reason = False, "at_short_lived"
                    has_at, has_st, has_rt = True, False, False
                    at_expires = created + timedelta(hours=3)
                elif q < 0.07:  # last import's outcome unknown: re-sent when due
                    unknown = attempts = rng.randint(1, 3)
                    retry_after = now + timedelta(seconds=rng.randint(-600, 1800))
                    last_error = "timeout after 30 s"
                    updated = now - timedelta(minutes=rng.randint(1, 600))
                    ids["retry"].append(n)
            elif r < 0.95:
                status = "rejected"
                attempts = 1
                last_error = rejections[n % len(rejections)]
                updated = created + timedelta(days=rng.random() * 30)
            elif r < 0.98:
                status = "retired"
                notes = "retired by staff"
                updated = created + timedelta(days=rng.random() * 30)
            else:
                status = "reserved"
                lease_id = leases[n % len(leases)]
                lease_expires = now + timedelta(seconds=rng.randint(-300, 900))
                updated = now - timedelta(minutes=5)
            if updated > now:
                updated = now
            ids[status].append(n)
            yield (
                n,
                email,
                at_c if has_at else None,
                st_c if has_st else None,
                rt_c if has_rt else None,
                f"app_bench{n % 97}" if has_rt else "",
                str(uuid.UUID(int=n)),
                digest(b"identity", n),
                digest(b"at", n) if has_at else None,
                digest(b"st", n) if has_st else None,
                digest(b"rt", n) if has_rt else None,
                email if has_at else "",
                s.ts(at_expires if has_at else None),
                usable,
                reason,
                status,
                s.ts(created),
                s.ts(updated),
                attempts,
                unknown,
                s.ts(retry_after),
                last_error,
                s.uid(lease_id),
                s.ts(lease_expires),
                s.ts(consumed_at),
                notes,
                b,
                at_h if has_at else "",
                st_h if has_st else "",
                rt_h if has_rt else "",
            )

    s.insert("accounts_account", ACCOUNT_COLUMNS, rows())
    s.insert(
        "accounts_consumptionday",
        ("day", "consumed"),
        ((d.isoformat(), n) for d, n in sorted(per_day.items())),
    )
    return ids


TEAM_STATUSES = (
    ("active", 0.65),
    ("full", 0.10),
    ("expired", 0.08),
    ("error", 0.03),
    ("banned", 0.10),
    ("gone", 0.02),
    ("", 0.02),
)


def seed_followed_teams(s: Seeder, consumed: list[int]) -> int:
    """A followed Team for every consumed account, in the statuses a few rounds leave, and the
    status changes that got them there (one from "" to the first status seen, and for the dead a
    second one from active)."""
    rng = random.Random(5)
    changes = []

    def rows():
        for team_id, account_id in enumerate(consumed, start=1):
            imported = s.now - timedelta(days=60 * rng.random())
            r, status = rng.random(), ""
            for name, share in TEAM_STATUSES:
                if r < share:
                    status = name
                    break
                r -= share
            checked = None if status == "" else s.now - timedelta(hours=rng.random() * 6)
            since = None
            if status:
                changes.append(
                    (len(changes) + 1, team_id, s.ts(imported + timedelta(hours=1)), "", "active")
                )
                since = imported + timedelta(hours=1)
                if status != "active":
                    since = imported + timedelta(
                        days=rng.random() * max(0.1, (s.now - imported).days)
                    )
                    changes.append((len(changes) + 1, team_id, s.ts(since), "active", status))
            yield (
                team_id,
                account_id,
                team_id,
                s.ts(imported),
                status,
                s.ts(since),
                1 + team_id % 6 if status else None,
                6 if status else None,
                s.ts(s.now + timedelta(days=30)) if status else None,
                s.ts(checked),
                s.ts(checked),
                0,
            )

    columns = (
        "id",
        "account_id",
        "team_id",
        "imported_at",
        "status",
        "status_since",
        "current_members",
        "max_members",
        "expires_at",
        "last_sync",
        "checked_at",
        "final_sightings",
    )
    n = s.insert("webhooks_followedteam", columns, rows())
    s.insert(
        "webhooks_teamstatuschange",
        ("id", "team_id", "at", "old_status", "new_status"),
        iter(changes),
    )
    return n


def run_count(attempts: int) -> int:
    return max(1, attempts // 300)


def seed_runs(s: Seeder, attempts: int) -> int:
    rng = random.Random(3)
    n_runs = run_count(attempts)
    start, span = s.now - timedelta(days=60), timedelta(days=60) - timedelta(minutes=10)

    def rows():
        for r in range(1, n_runs + 1):
            created = start + span * ((r - 1) / n_runs)
            q = rng.random()
            trigger = "webhook" if q < 0.9 else "manual" if q < 0.98 else "retry"
            q = rng.random()
            status = (
                "finished"
                if q < 0.95
                else "failed"
                if q < 0.97
                else "config_error"
                if q < 0.98
                else "abandoned"
            )
            error = {
                "failed": "manager unreachable",
                "config_error": "401 from the manager: check MANAGER_API_KEY",
                "abandoned": "lease expired: the worker died",
            }.get(status, "")
            started = created + timedelta(milliseconds=rng.randint(50, 900))
            finished = started + timedelta(seconds=rng.randint(2, 120))
            # need/reserved/outcome counts are filled from the attempts once they are in.
            yield (
                r,
                trigger,
                status,
                300 if trigger == "manual" else None,
                None,
                s.ts(created),
                s.ts(started),
                s.ts(finished),
                s.ts(started + timedelta(minutes=5)),
                s.uid(uuid.UUID(int=rng.getrandbits(128), version=4)),
                None,
                "ceil((threshold + margin - current_seats) / seats_per_account)",
                0,
                0,
                0,
                0,
                0,
                error,
            )

    columns = (
        "id",
        "trigger",
        "status",
        "requested_accounts",
        "requested_by_id",
        "created_at",
        "started_at",
        "finished_at",
        "lease_expires_at",
        "lease_id",
        "need",
        "need_explained",
        "reserved",
        "consumed",
        "rejected",
        "unknown",
        "returned",
        "error",
    )
    return s.insert("webhooks_replenishmentrun", columns, rows())


def seed_events(s: Seeder, attempts: int) -> int:
    """The webhook calls behind the runs: one acted on per webhook run, some superseded, a few refused."""
    rng = random.Random(4)
    n_runs = run_count(attempts)
    start, span = s.now - timedelta(days=60), timedelta(days=60) - timedelta(minutes=10)
    message = "库存不足预警：当前可用车位 {0} 个，低于阈值 10 个"

    def rows():
        n = 0
        for r in range(1, n_runs + 1):
            at = start + span * ((r - 1) / n_runs)
            for k in range(rng.choice((1, 1, 2, 3))):
                n += 1
                seats = rng.randint(0, 9)
                body = f'{{"event": "low_stock", "current_seats": {seats}, "threshold": 10, "message": "{message.format(seats)}"}}'
                if rng.random() < 0.01:
                    yield (
                        n,
                        s.ts(at - timedelta(seconds=k + 1)),
                        "refused",
                        False,
                        None,
                        None,
                        "",
                        body,
                        "missing or wrong X-API-Key",
                        "10.0.0.9",
                        None,
                    )
                    continue
                status = "acted_on" if k == 0 else "superseded"
                yield (
                    n,
                    s.ts(at - timedelta(seconds=k)),
                    status,
                    True,
                    seats,
                    10,
                    message.format(seats),
                    body,
                    "",
                    "10.0.0.8",
                    r,
                )

    columns = (
        "id",
        "received_at",
        "status",
        "key_ok",
        "current_seats",
        "threshold",
        "message",
        "payload",
        "refusal",
        "remote_addr",
        "run_id",
    )
    return s.insert("webhooks_webhookevent", columns, rows())


def seed_attempts(s: Seeder, attempts: int, ids: dict[str, list[int]], accounts: int) -> int:
    rng = random.Random(5)
    n_runs = run_count(attempts)
    start, span = s.now - timedelta(days=60), timedelta(days=60) - timedelta(minutes=10)
    everyone = range(1, accounts + 1)
    pools = {
        "consumed": ids["consumed"] or everyone,
        "rejected": ids["rejected"] or everyone,
        "unknown": (ids["retry"] + ids["consumed"][: len(ids["retry"]) * 3]) or everyone,
        "config_error": ids["available"] or everyone,
    }
    cursors = dict.fromkeys(pools, 0)
    answers = {
        "consumed": (200, '{"success": true, "message": "导入成功"}', ""),
        "rejected": (400, '{"success": false, "message": "账号已在其他 Team 中"}', ""),
        "config_error": (401, '{"detail": "Invalid API key"}', "401 from the manager"),
    }

    def rows():
        for i in range(1, attempts + 1):
            q = rng.random()
            outcome = (
                "consumed"
                if q < 0.85
                else "rejected"
                if q < 0.93
                else "unknown"
                if q < 0.99
                else "config_error"
            )
            pool = pools[outcome]
            account = pool[cursors[outcome] % len(pool)]
            cursors[outcome] += 1
            if outcome == "unknown":
                status, message, error = (
                    (502, "Bad Gateway", "")
                    if rng.random() < 0.5
                    else (None, "", "timeout after 30 s")
                )
            else:
                status, message, error = answers[outcome]
            created = (
                start + span * ((i - 1) / attempts) + timedelta(milliseconds=rng.randint(0, 999))
            )
            yield (
                i,
                s.ts(created),
                "single" if rng.random() < 0.9 else "batch",
                True,
                status,
                message,
                error,
                rng.randint(150, 30_000 if outcome == "unknown" else 3000),
                outcome,
                account,
                (i - 1) * n_runs // attempts + 1,
            )

    columns = (
        "id",
        "created_at",
        "mode",
        "sent",
        "http_status",
        "manager_message",
        "error",
        "duration_ms",
        "outcome",
        "account_id",
        "run_id",
    )
    return s.insert("webhooks_importattempt", columns, rows())


RUN_TOTALS_SQL = """
UPDATE webhooks_replenishmentrun SET need = t.n, reserved = t.n, consumed = t.c, rejected = t.r, unknown = t.u
FROM (
    SELECT run_id, count(*) AS n,
           sum(CASE WHEN outcome = 'consumed' THEN 1 ELSE 0 END) AS c,
           sum(CASE WHEN outcome = 'rejected' THEN 1 ELSE 0 END) AS r,
           sum(CASE WHEN outcome = 'unknown' THEN 1 ELSE 0 END) AS u
    FROM webhooks_importattempt GROUP BY run_id
) AS t
WHERE webhooks_replenishmentrun.id = t.run_id
"""


def seed(kind: str, accounts: int, attempts: int) -> None:
    from django.db import connection
    from django.utils import timezone

    connection.close()
    s = Seeder(kind, timezone.now().astimezone(UTC))
    cipher = sample_ciphertexts()
    print(
        f"seeding {accounts:,} accounts, {attempts:,} attempts (ciphertext per row: AT {len(cipher['access_token'])} B, "
        f"ST {len(cipher['session_token'])} B, RT {len(cipher['refresh_token'])} B) …",
        flush=True,
    )
    steps = []
    total = time.perf_counter()

    def step(name, fn, *a):
        t = time.perf_counter()
        result = fn(*a)
        steps.append(f"{name} {time.perf_counter() - t:.1f} s")
        return result

    step("batches", seed_batches, s, accounts)
    ids = step("accounts", seed_accounts, s, accounts, cipher)
    step("followed teams", seed_followed_teams, s, ids["consumed"])
    step("runs", seed_runs, s, attempts)
    step("events", seed_events, s, attempts)
    step("attempts", seed_attempts, s, attempts, ids, accounts)
    step("run totals", s.execute, RUN_TOTALS_SQL)
    tables = [
        "accounts_accountbatch",
        "accounts_account",
        "webhooks_replenishmentrun",
        "webhooks_webhookevent",
        "webhooks_importattempt",
        "webhooks_followedteam",
        "webhooks_teamstatuschange",
    ]
    step("analyze" if kind == "sqlite" else "vacuum analyze", s.finish, tables)

    def batch_report():
        # What the worker does at the end of each follow-up round; the batches page reads it.
        from django.db import connection as django_connection

        from webhooks.follow_up import batch_report_make, team_totals_recount

        django_connection.close()
        batch_report_make(now=timezone.now())
        # The seed writes Teams straight into their table; the service keeps these totals as
        # it writes Teams itself.
        team_totals_recount()

    step("batch report and Team totals (the worker's, after a round)", batch_report)
    print(f"seeded in {time.perf_counter() - total:.1f} s ({', '.join(steps)})", flush=True)
    if kind == "sqlite":
        print(f"file: {SQLITE_PATH} ({SQLITE_PATH.stat().st_size / 1e9:.2f} GB)")


# --- Timing (child process) -----------------------------------------------------------------


def ensure_superuser():
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user, _ = User.objects.get_or_create(
        username="bench-admin",
        defaults={"is_staff": True, "is_superuser": True, "email": "bench@example.com"},
    )
    return user


def routed(url: str) -> bool:
    from django.urls import Resolver404, resolve

    try:
        resolve(url.split("?")[0])
    except Resolver404:
        return False
    return True


def bare_floor(statements, repeat: int) -> list[float]:
    """The floor of a page: its own SELECTs, with their own parameters, run bare on the same
    connection (no middleware, view, ORM or template), `repeat` times; ms per repetition. Its
    writes (session, last login) are left out: the floor only reads."""
    from django.db import connection

    reads = [
        (sql, params)
        for sql, params, many in statements
        if not many and sql.lstrip().upper().startswith("SELECT")
    ]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        with connection.cursor() as cursor:
            for sql, params in reads:
                cursor.execute(sql, params)
                cursor.fetchall()
        times.append((time.perf_counter() - start) * 1000)
    return times


def time_page(client, url: str, repeat: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    result = {"url": url, "times": [], "status": None, "error": None, "queries": []}
    try:
        client.get(url)  # warm-up
        for _ in range(repeat):
            start = time.perf_counter()
            response = client.get(url)
            result["times"].append((time.perf_counter() - start) * 1000)
            result["status"] = response.status_code
        # One more request, recorded: Django logs each query's SQL (parameters filled in) but its
        # time only to the millisecond, so each execution is also timed here with perf_counter.
        timings = []
        statements = []

        def timer(execute, sql, params, many, context):
            statements.append((sql, params, many))
            start = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                timings.append(time.perf_counter() - start)

        with CaptureQueriesContext(connection) as ctx, connection.execute_wrapper(timer):
            client.get(url)
        queries = [dict(q) for q in ctx.captured_queries]
        if len(queries) == len(timings):
            for query, seconds in zip(queries, timings):
                query["time"] = seconds
        result["queries"] = queries
        result["floor_times"] = bare_floor(statements, repeat)
    except Exception as exc:  # a page that crashes is reported, the others still run
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[
            :200
        ]
    return result


def explain(kind: str, sql: str) -> str:
    from django.db import connection

    head = sql.lstrip().split(None, 1)[0].upper()
    if head not in ("SELECT", "WITH"):
        return "(not a SELECT: not explained)"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if kind == "postgresql" else "EXPLAIN QUERY PLAN "
    try:
        with connection.cursor() as cursor:
            cursor.execute(prefix + sql)
            rows = cursor.fetchall()
    except Exception as exc:
        return f"(EXPLAIN failed: {exc})"
    if kind == "postgresql":
        return "\n".join(row[0] for row in rows)
    return "\n".join(f"{row[0]:>4} {row[1]:>4}  {row[-1]}" for row in rows)


def child(args) -> int:
    import django

    django.setup()
    from django.db import connection
    from django.test import Client

    kind = args.child
    is_pg = kind == "postgresql"
    # whitenoise warns that collectstatic has not been run: irrelevant to server time here.
    warnings.filterwarnings("ignore", message="No directory at")
    if args.seed:
        seed(kind, args.accounts, args.attempts)
    user = ensure_superuser()
    client = Client()
    client.force_login(user)

    results = []
    for name, url in PAGES:
        if url in OPTIONAL_PAGES and not routed(url):
            print(f"({url} is not routed: skipped)")
            continue
        results.append((name, time_page(client, url, args.repeat)))

    if is_pg:
        version = connection.cursor().connection.info.server_version
        engine = f"PostgreSQL {version // 10000}.{version % 10000}"
    else:
        import sqlite3

        engine = f"SQLite {sqlite3.sqlite_version}"
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{engine} — {args.accounts:,} accounts, {args.attempts:,} attempts; server time in ms over "
        f"{args.repeat} requests after one warm-up; queries and SQL time of one more request; "
        f"load average {load} on {os.cpu_count()} CPUs"
    )
    header = f"{'page':<22} {'url':<52} {'min':>7} {'median':>7} {'max':>7} {'floor':>7} {'queries':>7} {'sql ms':>7}  result"
    print(header)
    print("-" * len(header))
    slow, all_ok, rows = [], True, []
    for name, r in results:
        if r["error"] or r["status"] != 200:
            all_ok = False
            what = r["error"] or f"HTTP {r['status']}"
            print(
                f"{name:<22} {r['url']:<52} {'':>7} {'':>7} {'':>7} {'':>7} {'':>7}  ERROR {what}"
            )
            continue
        t = r["times"]
        median = statistics.median(t)
        sql_ms = sum(float(q["time"]) for q in r["queries"]) * 1000
        over = median > TARGET_MS
        verdict = "FAIL" if over else "PASS"
        all_ok &= not over
        floor = statistics.median(r["floor_times"]) if r.get("floor_times") else None
        floor_text = f"{floor:7.1f}" if floor is not None else f"{'':>7}"
        print(
            f"{name:<22} {r['url']:<52} {min(t):7.1f} {median:7.1f} {max(t):7.1f} {floor_text} {len(r['queries']):7d} {sql_ms:7.1f}  {verdict}"
        )
        rows.append(
            {
                "page": name,
                "url": r["url"],
                "median_ms": round(median, 1),
                "min_ms": round(min(t), 1),
                "max_ms": round(max(t), 1),
                "floor_median_ms": None if floor is None else round(floor, 1),
                "queries": len(r["queries"]),
            }
        )
        if over:
            slow.append((name, r))
    print(
        f"target (median under {TARGET_MS:.0f} ms on {engine}, every page answering 200): "
        f"{'met' if all_ok else 'NOT met'}"
    )

    from bench.results import record

    record(
        "admin",
        kind,
        conditions={
            "engine": engine,
            "accounts": args.accounts,
            "attempts": args.attempts,
            "samples": f"{args.repeat} timed requests per page after one warm-up (median)",
            "database": (
                "seeded this run, then " + ("VACUUM ANALYZE" if is_pg else "ANALYZE")
                if args.seed
                else "reused from an earlier run (--keep), not re-analyzed"
            ),
            "server time": "Django test client in-process: no WSGI server, no network",
            "floor": "the page's own SELECTs with their parameters, run bare on the same connection",
        },
        rows=rows,
        out_dir=args.out,
    )

    if args.queries:
        for name, r in results:
            print(f"\n--- {name} ({r['url']}): every query of one request, in order")
            for q in r["queries"]:
                print(f"  {float(q['time']) * 1000:8.1f} ms  {q['sql'][:200]}")

    for name, r in slow:
        queries = sorted(r["queries"], key=lambda q: float(q["time"]), reverse=True)
        if not queries:
            continue
        worst = queries[0]
        print(
            f"\n--- {name} ({r['url']}): median {statistics.median(r['times']):.0f} ms, "
            f"{len(queries)} queries, slowest {float(worst['time']) * 1000:.1f} ms:"
        )
        sql = worst["sql"]
        print(sql if len(sql) <= SQL_SHOWN else sql[:SQL_SHOWN] + " …")
        for q in queries[1:3]:
            print(f"    next: {float(q['time']) * 1000:.1f} ms  {q['sql'][:160]}")
        print(explain(kind, sql))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed requests per page (after one warm-up)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="reuse the seeded database when its row counts match"
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument(
        "--queries", action="store_true", help="also list every query of every page with its time"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the figures (default bench/results)"
    )
    parser.add_argument("--child", choices=("sqlite", "postgresql"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.accounts < 1 or args.attempts < 1 or args.repeat < 1:
        parser.error("--accounts, --attempts and --repeat must be at least 1")
    if args.child:
        return child(args)
    ok = True
    if not args.skip_sqlite:
        ok &= run_database("sqlite", args)
    if not args.skip_postgres:
        ok &= run_database("postgresql", args)
    # Like the other benches, a missed target is printed, not an exit status; a crash is one.
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
