"""The loader's second half: checking each chunk against the pool and inserting what is new
(executemany on SQLite, binary COPY on PostgreSQL), settling races with the unique hashes."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts import crypto
from accounts.models import (
    LOOKUP_HASH_FIELDS,
    TOKEN_FIELDS,
    Account,
    AccountStatus,
)
from accounts.selectors import account_existing_digests
from accounts.services.preparing import _Pending
from accounts.services.reports import (
    MSG_DUPLICATE_IN_POOL,
    LineOutcome,
    _unusable_code,
)
from accounts.tokens import interpolate, mask

logger = logging.getLogger(__name__)


# Seal tokens in the compact format (crypto.FORMAT_V3, a quarter fewer bytes)? Not while the
# process preparing the lines is the slower half of a load: compacting and checking a line's
# tokens costs it ~50 µs a line (+70%), and the writer saved nothing measurable (SQLite: 0.64 s of CPU
# per 20,000 rows either way; PostgreSQL's server: 1.1 s either way).
COMPACT = False


class _Inserter:
    """Inserts parsed accounts, a chunk at a time.

    The ORM's bulk_create spends most of a large load building model instances; SQL on the same
    connection does the same insert for a fraction of the cost. On SQLite, one prepared
    statement per chunk (executemany). On PostgreSQL, where executemany took 7.0 s for 20,000
    rows (a round trip each; SQLite: 1.1 s), a binary COPY straight into the table: 1.1 s of the
    server's CPU for those rows. Copying into a temporary table first and moving the rows with
    INSERT … ON CONFLICT DO NOTHING cost it 1.6 s, so that is kept for the retry after a race
    (`insert_new`), where it saves a second failure.
    """

    def __init__(self, *, batch_id: int):
        self.now = timezone.now()
        self.copies = connection.vendor == "postgresql"
        table = connection.ops.quote_name(Account._meta.db_table)
        self.columns = (
            "email",
            "access_token",
            "session_token",
            "refresh_token",
            "client_id",
            "account_id",
            "access_token_hint",
            "session_token_hint",
            "refresh_token_hint",
            *LOOKUP_HASH_FIELDS,
            "at_email",
            "at_expires_at",
            "usable",
            "unusable_reason",
            # The columns every row of the load shares (`shared`), not in the rows themselves.
            "status",
            "batch_id",
            "created_at",
            "updated_at",
            "attempts",
            "unknown_attempts",
            "last_error",
            "notes",
        )
        quoted = ", ".join(connection.ops.quote_name(c) for c in self.columns)
        placeholders = ", ".join(["%s"] * len(self.columns))
        self.sql = f"INSERT INTO {table} ({quoted}) VALUES ({placeholders})"
        adapt = connection.ops.adapt_datetimefield_value
        self.adapt_dt = _datetime_adapter()
        self.shared = (
            AccountStatus.AVAILABLE.value,
            batch_id,
            adapt(self.now),
            adapt(self.now),
            0,
            0,
            "",
            "",
        )
        self._hashes_at = [self.columns.index(f) for f in LOOKUP_HASH_FIELDS]
        self._seal = {
            name: crypto.sealer(context=Account._meta.get_field(name).context, compact=COMPACT)
            for name in TOKEN_FIELDS
        }
        if self.copies:
            by_column = {f.column: f for f in Account._meta.concrete_fields}
            # The COPY's binary types, as the columns are declared ("varchar(254)" → "varchar").
            self.types = [by_column[c].db_type(connection).split("(")[0] for c in self.columns]
            self.copy_sql = f"COPY {table} ({quoted}) FROM STDIN (FORMAT BINARY)"
            stage = connection.ops.quote_name("pool_load_stage")
            self.stage_sql = (
                f"CREATE TEMPORARY TABLE {stage} AS SELECT {quoted} FROM {table} WITH NO DATA"
            )
            self.stage_copy_sql = f"COPY {stage} ({quoted}) FROM STDIN (FORMAT BINARY)"
            keys = ", ".join(
                connection.ops.quote_name(f)
                for f in (*LOOKUP_HASH_FIELDS[1:], LOOKUP_HASH_FIELDS[0])
            )
            self.move_sql = (
                f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM {stage} "
                f"ON CONFLICT DO NOTHING RETURNING COALESCE({keys})"
            )
            self.drop_sql = f"DROP TABLE {stage}"

    def row(self, pending: _Pending) -> tuple:
        a = pending.parsed.account
        h = pending.hashes
        seal = self._seal
        at, st, rt = a.access_token, a.session_token, a.refresh_token
        return (
            a.email or "",
            seal["access_token"](at) if at else None,
            seal["session_token"](st) if st else None,
            seal["refresh_token"](rt) if rt else None,
            a.client_id or "",
            a.account_id or "",
            mask(at),
            mask(st),
            mask(rt),  # the hints shown in lists
            *h,
            a.at_email or "",
            self.adapt_dt(a.at_expires_at) if a.at_expires_at else None,
            a.usable,
            _unusable_code(pending.parsed),
        )

    def insert(self, rows: list[tuple]) -> None:
        """Insert `rows` (as `row` makes them); an account the pool already has fails it
        (IntegrityError)."""
        shared = self.shared
        if not self.copies:
            with connection.cursor() as cursor:
                cursor.executemany(self.sql, [r + shared for r in rows])
            return
        with connection.cursor() as wrapper, connection.wrap_database_errors:
            # psycopg's own cursor: Django's wrapper has no COPY.
            with wrapper.cursor.copy(self.copy_sql) as copy:
                copy.set_types(self.types)
                for r in rows:
                    copy.write_row(r + shared)

    def insert_new(self, rows: list[tuple]) -> list[int]:
        """PostgreSQL: insert `rows`, skipping those whose account the pool has (by any unique
        constraint, also one another load has just inserted); return the skipped positions."""
        shared = self.shared
        with connection.cursor() as wrapper, connection.wrap_database_errors:
            cursor = wrapper.cursor
            cursor.execute(self.stage_sql)
            with cursor.copy(self.stage_copy_sql) as copy:
                copy.set_types(self.types)
                for r in rows:
                    copy.write_row(r + shared)
            cursor.execute(self.move_sql)
            inserted = {key for (key,) in cursor.fetchall()}
            cursor.execute(self.drop_sql)
        at, st, rt, identity = (self._hashes_at[i] for i in (1, 2, 3, 0))
        return [
            n
            for n, r in enumerate(rows)
            if (r[at] or r[st] or r[rt] or r[identity]) not in inserted
        ]


def _datetime_adapter():
    """connection.ops.adapt_datetimefield_value, without its checks on SQLite: the loader's
    values are aware datetimes, made naive in the connection's time zone and written as text
    (the same text; 5 µs a line less)."""
    if connection.vendor != "sqlite" or not settings.USE_TZ:
        return connection.ops.adapt_datetimefield_value
    tz = connection.timezone
    return lambda value: str(value.astimezone(tz).replace(tzinfo=None))


def _existing_ids(chunk: list[_Pending]) -> dict[str, int]:
    wanted: dict[str, list[str]] = {name: [] for name in LOOKUP_HASH_FIELDS}
    for pending in chunk:
        if pending.every_key is None:
            for name, d in zip(LOOKUP_HASH_FIELDS, pending.hashes):
                if d is not None:
                    wanted[name].append(d)
        else:
            for name, values in pending.every_key.items():
                wanted[name].extend(values)
    return account_existing_digests(digests=wanted)


def _drop_pool_duplicates(chunk: list[_Pending], record) -> list[_Pending]:
    """The lines of `chunk` the pool has no account of; the others are recorded as duplicates
    of the account they match (by identity, then each token, as LOOKUP_HASH_FIELDS orders them)."""
    existing = _existing_ids(chunk)
    if not existing:
        return chunk
    fresh = []
    for pending in chunk:
        match = next(
            (existing[d] for values in pending.lookups.values() for d in values if d in existing),
            None,
        )
        if match is None:
            fresh.append(pending)
        else:
            reason = str(interpolate(MSG_DUPLICATE_IN_POOL, {"id": match}))
            record(pending.parsed, LineOutcome.DUPLICATE, reason)
    return fresh


def _insert_chunk(inserter: _Inserter, chunk: list[_Pending], record) -> None:
    """Check a chunk against the pool and insert what is new, in one transaction.

    Outside a strict load this atomic block is the transaction itself (a savepoint would cost
    a statement journal on SQLite). Another load may insert the same account between the check
    and the insert: the unique constraints refuse it, and the chunk is checked again. On
    PostgreSQL that second try inserts with ON CONFLICT DO NOTHING (`insert_new`), so a third
    racing load cannot refuse it again: the constraints skip what the pool has, and the lines
    they skipped are looked up for the account each duplicates.
    """
    settle = False
    while chunk:
        duplicates = []

        def collect(*args, found=duplicates):
            found.append(args)

        try:
            with transaction.atomic():
                fresh = _drop_pool_duplicates(chunk, collect)
                skipped = []
                if fresh and settle:
                    skipped = [fresh[n] for n in inserter.insert_new([p.row for p in fresh])]
                elif fresh:
                    inserter.insert([p.row for p in fresh])
                # Skipped for an account the constraints found and this lookup does not: that
                # account was deleted since; these lines are tried again.
                unresolved = _drop_pool_duplicates(skipped, collect) if skipped else []
        except IntegrityError:
            # Retry only if the pool gained one of these accounts since the check; anything else
            # is a real error.
            if len(_drop_pool_duplicates(chunk, lambda *args: None)) == len(chunk) - len(
                duplicates
            ):
                raise
            settle = inserter.copies
            continue
        for args in duplicates:
            record(*args)
        if skipped:
            left_out = {id(p) for p in skipped}
            fresh = [p for p in fresh if id(p) not in left_out]
        for pending in fresh:
            record(pending.parsed, LineOutcome.CREATED)
        chunk = unresolved
