"""The loader's machinery: preparing (hashing, sealing) lines in order, checking them against the
pool and inserting them in chunks."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts import crypto
from accounts.models import (
    LOOKUP_HASH_FIELDS,
    MATERIAL_FIELDS,
    Account,
    AccountStatus,
    lookup_hashes,
    lookup_values,
)
from accounts.parser import ParsedLine
from accounts.selectors import account_existing_digests
from accounts.services.reports import (
    MSG_DUPLICATE_IN_POOL,
    MSG_DUPLICATE_IN_UPLOAD,
    LineOutcome,
    _unusable_code,
)
from accounts.tokens import mask

logger = logging.getLogger(__name__)


# Rows per transaction. Every SQLite commit pays for a WAL write and checkpoint, so fewer, bigger
# commits load faster (measured: 1,000 rows a commit spent 6 s of 100,000 lines in commits,
# 4,000 spent 3 s); 4,000 rows (~17 MB) still hold the write lock for only a fraction of a second.
LOAD_CHUNK = 4000


@dataclass(slots=True)
class _Pending:
    parsed: ParsedLine
    digests: dict[str, str | None]  # stored with the row: under the newest key
    lookups: dict[
        str, list[str]
    ]  # compared with the pool: under every key, so unrotated rows still match
    row: tuple | None = None  # the INSERT parameters, secrets already sealed


def _pending(parsed: ParsedLine) -> _Pending:
    material = {f: getattr(parsed.account, f) for f in MATERIAL_FIELDS}
    digests = lookup_hashes(**material)
    if crypto.key_count() == 1:
        lookups = {field: [d] for field, d in digests.items() if d}
    else:
        values = zip(LOOKUP_HASH_FIELDS, lookup_values(**material))
        lookups = {field: crypto.digests_all_keys(v) for field, v in values if v}
    return _Pending(parsed, digests, lookups)


# Each secret column's encryption context (accounts.fields.EncryptedTextField.context).
_CONTEXTS = {
    name: Account._meta.get_field(name).context
    for name in ("access_token", "session_token", "refresh_token")
}


class _Inserter:
    """Inserts parsed accounts with one prepared statement per chunk.

    The ORM's bulk_create spends most of a large load building model instances; a raw
    executemany on the same connection does the same insert for a fraction of the cost.
    """

    def __init__(self, *, batch_id: int):
        self.now = timezone.now()
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
        self.adapt_dt = adapt
        self.constant_tail = (
            AccountStatus.AVAILABLE.value,
            batch_id,
            adapt(self.now),
            adapt(self.now),
            0,
            0,
            "",
            "",
        )

    def row(self, pending: _Pending) -> tuple:
        a = pending.parsed.account
        d = pending.digests

        def seal(value, field):
            return crypto.encrypt(value, context=_CONTEXTS[field]) if value else None

        return (
            a.email or "",
            seal(a.access_token, "access_token"),
            seal(a.session_token, "session_token"),
            seal(a.refresh_token, "refresh_token"),
            a.client_id or "",
            a.account_id or "",
            mask(a.access_token),
            mask(a.session_token),
            mask(a.refresh_token),  # the hints shown in lists
            d["identity_hash"],
            d["access_token_hash"],
            d["session_token_hash"],
            d["refresh_token_hash"],
            a.at_email or "",
            self.adapt_dt(a.at_expires_at) if a.at_expires_at else None,
            a.usable,
            _unusable_code(pending.parsed),
            *self.constant_tail,
        )

    def insert(self, rows: list[tuple]) -> None:
        with connection.cursor() as cursor:
            cursor.executemany(self.sql, rows)


class _Preparer:
    """Parses, hashes and encrypts lines, chunk by chunk, in input order.

    With `in_process` the work runs in a forked child while this process writes the previous
    chunk: parsing and sealing 100,000 lines and writing them each take several seconds, Python
    threads would serialise them on the GIL, and a second process runs them side by side on the
    second core. The child never touches the database connection, and it sends back only sealed
    rows, hashes and line outcomes: plaintext tokens stay in the process that read them.
    Everything that needs order (line numbers, duplicates within the upload) happens in the one
    preparing process.
    """

    def __init__(
        self, parsed_lines: Iterable[ParsedLine], inserter: _Inserter | None, *, in_process: bool
    ):
        self.parsed_lines = parsed_lines
        self.inserter = inserter
        self.in_process = in_process
        self.child = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.child is not None:
            if self.child.is_alive():
                self.child.terminate()
            self.child.join()

    def chunks(self):
        """Lists of (parsed line, outcome, reason) or (parsed line, None, _Pending) in input order."""
        if not self.in_process:
            yield from self._prepare()
            return
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        self.child = context.Process(
            target=self._child, args=(send, receive), name="account-load-prepare", daemon=True
        )
        self.child.start()
        send.close()
        with receive:
            while True:
                try:
                    kind, payload = receive.recv()
                except EOFError:
                    raise RuntimeError(
                        "The process preparing the accounts stopped unexpectedly."
                    ) from None
                if kind == "done":
                    return
                if kind == "error":
                    raise payload
                yield payload

    def _child(self, send, receive) -> None:
        # Without its copy of the reading end, the child's send fails (and it exits) as soon as
        # the parent dies, instead of blocking on a pipe nobody reads.
        receive.close()
        # The pipe's buffer is the back-pressure: the child waits while the writer is behind.
        try:
            for items in self._prepare():
                for parsed, _, _ in items:
                    parsed.account = None
                send.send(("items", items))
            send.send(("done", None))
        except BaseException as exc:
            try:
                send.send(("error", exc))
            except Exception:
                send.send(("error", RuntimeError(repr(exc))))

    def _prepare(self):
        seen: dict[str, int] = {}
        items: list[tuple] = []
        writable = 0
        for parsed in self.parsed_lines:
            if not parsed.valid:
                items.append((parsed, LineOutcome.INVALID, ""))
            else:
                pending = _pending(parsed)
                present = [d for d in pending.digests.values() if d]
                first = next((seen[d] for d in present if d in seen), None)
                if first is None:
                    seen.update(dict.fromkeys(present, parsed.lineno))
                    if self.inserter is not None:
                        pending.row = self.inserter.row(pending)
                    items.append((parsed, None, pending))
                    writable += 1
                else:
                    items.append(
                        (
                            parsed,
                            LineOutcome.DUPLICATE,
                            str(MSG_DUPLICATE_IN_UPLOAD % {"line": first}),
                        )
                    )
            if writable >= LOAD_CHUNK or len(items) >= 4 * LOAD_CHUNK:
                yield items
                items, writable = [], 0
        if items:
            yield items


def _drop_pool_duplicates(chunk: list[_Pending], record) -> list[_Pending]:
    wanted: dict[str, list[str]] = {name: [] for name in LOOKUP_HASH_FIELDS}
    for pending in chunk:
        for name, values in pending.lookups.items():
            wanted[name].extend(values)
    existing = account_existing_digests(digests=wanted)
    fresh = []
    for pending in chunk:
        match = next(
            (existing[d] for values in pending.lookups.values() for d in values if d in existing),
            None,
        )
        if match is None:
            fresh.append(pending)
        else:
            record(
                pending.parsed, LineOutcome.DUPLICATE, str(MSG_DUPLICATE_IN_POOL % {"id": match})
            )
    return fresh


def _insert_chunk(inserter: _Inserter, chunk: list[_Pending], record) -> None:
    """Check a chunk against the pool and insert what is new, in one transaction.

    Outside a strict load this atomic block is the transaction itself (a savepoint would cost
    a statement journal on SQLite). Another load may insert the same account between the check
    and the insert: the unique constraints refuse it, and the chunk is checked again.
    """
    while chunk:
        duplicates = []
        try:
            with transaction.atomic():
                fresh = _drop_pool_duplicates(chunk, lambda *args, d=duplicates: d.append(args))
                if fresh:
                    inserter.insert([p.row for p in fresh])
        except IntegrityError:
            # Retry only if the pool gained one of these accounts since the check; anything else
            # is a real error.
            if len(_drop_pool_duplicates(chunk, lambda *args: None)) == len(chunk) - len(
                duplicates
            ):
                raise
            continue
        for args in duplicates:
            record(*args)
        for pending in fresh:
            record(pending.parsed, LineOutcome.CREATED)
        return
