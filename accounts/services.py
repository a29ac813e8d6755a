"""Writes to the pool. Every entry point (admin, command, API) calls these."""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Case, DateTimeField, F, Q, Value, When
from django.db.models.functions import Least
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from accounts import crypto
from accounts.fields import EncryptedTextField
from accounts.models import (
    BATCH_RUNNING_STATUSES,
    LOOKUP_HASH_FIELDS,
    MATERIAL_FIELDS,
    TOKEN_FIELDS,
    Account,
    AccountBatch,
    AccountStatus,
    BatchProblemChunk,
    BatchSource,
    BatchStatus,
    UnusableReason,
    lookup_hashes,
    lookup_values,
    token_hint,
)
from accounts.parser import ParsedAccount, ParsedLine, parse_lines
from accounts.selectors import account_existing_digests
from accounts.tokens import interpolate, mask, redact

logger = logging.getLogger(__name__)

# Rows per transaction. Every SQLite commit pays for a WAL write and checkpoint, so fewer, bigger
# commits load faster (measured: 1,000 rows a commit spent 6 s of 100,000 lines in commits,
# 4,000 spent 3 s); 4,000 rows (~17 MB) still hold the write lock for only a fraction of a second.
LOAD_CHUNK = 4000

MSG_DUPLICATE_IN_POOL = _("already in the pool (account #%(id)s)")
MSG_DUPLICATE_IN_UPLOAD = _("duplicate of line %(line)s")
MSG_STRICT_ABORTED = _("Nothing was saved: --strict refuses a file with invalid lines.")
MSG_CHUNK_REFUSED = _(
    "The database refused %(n)s lines (lines %(first)s to %(last)s): %(reason)s. The other lines were "
    "saved; run the batch again to retry these."
)
MSG_LINE_REFUSED = _("Not saved, the database refused its chunk: %(reason)s")


class LoadAborted(Exception):
    def __init__(self, report: LoadReport):
        super().__init__(str(MSG_STRICT_ABORTED))
        self.report = report


@dataclass(slots=True)
class LineOutcome:
    CREATED = "created"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    # Valid, but in a chunk the database refused: not saved, can be loaded again.
    FAILED = "failed"

    lineno: int
    outcome: str
    parsed: ParsedLine
    duplicate_reason: str = ""

    @property
    def account(self) -> ParsedAccount | None:
        return self.parsed.account

    @property
    def messages(self) -> list[str]:
        """Why the line was not saved, then what staff should know about it."""
        reasons = [str(p.message) for p in self.parsed.errors]
        if self.duplicate_reason:
            reasons.append(self.duplicate_reason)
        return reasons + [str(p.message) for p in self.parsed.warnings]


@dataclass
class LoadReport:
    dry_run: bool
    created: int = 0
    duplicates: int = 0
    invalid: int = 0
    flagged_unusable: int = 0
    failed: int = 0
    # Why lines failed (the first chunk the database refused), or "".
    error: str = ""
    # The physical line number read so far.
    lines_read: int = 0
    # Every line not saved or with a warning (saved lines too with keep_lines), unless the
    # caller takes them one by one as they come (on_line): a load can be huge.
    lines: list[LineOutcome] = field(default_factory=list)


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


def _unusable_code(parsed: ParsedLine) -> str:
    return next((p.code for p in parsed.warnings if p.code in UnusableReason.values), "")


def account_load(
    *,
    lines: Iterable[str],
    batch: AccountBatch | None,
    dry_run: bool = False,
    strict: bool = False,
    keep_lines: bool = False,
    now: datetime | None = None,
    on_line: Callable[[LineOutcome], None] | None = None,
    on_chunk: Callable[[LoadReport], None] | None = None,
    helper_process: bool = False,
) -> LoadReport:
    """Parse, validate, de-duplicate, encrypt and insert accounts, streaming.

    Lines are checked for duplicates within the upload and against the pool (by lookup hash).
    With `dry_run` nothing is written (the preview) and `batch` may be None. With `strict` a
    single invalid line rolls back the whole load and raises `LoadAborted`; without it, each
    chunk commits on its own so a long load never holds the database's write lock for long, and
    a chunk the database refuses is reported (outcome "failed", `report.error`) while the other
    chunks are saved.

    Every line with something to report (not saved, or saved with a warning; with `keep_lines`
    every line) goes to `on_line`, in line order, chunk by chunk; without `on_line` they are
    collected in `report.lines`. `on_chunk` is called after each chunk (progress; it may raise
    to stop the load). `helper_process` prepares chunks in a forked process (command line only:
    never in a web or worker process).
    """
    report = LoadReport(dry_run=dry_run)
    inserter = None if dry_run else _Inserter(batch_id=batch.pk)
    parsed_lines = parse_lines(
        lines,
        now=now or timezone.now(),
        min_at_lifetime=timedelta(hours=settings.POOL_MIN_AT_LIFETIME_HOURS),
    )
    outcomes: list[LineOutcome] = []

    def record(parsed: ParsedLine, outcome: str, reason: str = "") -> None:
        if outcome == LineOutcome.CREATED:
            report.created += 1
            report.flagged_unusable += bool(_unusable_code(parsed))
        elif outcome == LineOutcome.DUPLICATE:
            report.duplicates += 1
        elif outcome == LineOutcome.FAILED:
            report.failed += 1
        else:
            report.invalid += 1
        if keep_lines or outcome != LineOutcome.CREATED or parsed.warnings:
            outcomes.append(LineOutcome(parsed.lineno, outcome, parsed, reason))

    def write(chunk: list[_Pending]) -> None:
        if inserter is None:
            for pending in _drop_pool_duplicates(chunk, record):
                record(pending.parsed, LineOutcome.CREATED)
            return
        try:
            _insert_chunk(inserter, chunk, record)
        except DatabaseError as exc:
            if strict:
                raise
            # The chunk's transaction was rolled back; the chunks before it stay saved and the
            # ones after it are still tried. Its lines are reported, and can be loaded again.
            reason = _database_reason(exc)
            report.error = report.error or interpolate(
                MSG_CHUNK_REFUSED,
                {
                    "n": len(chunk),
                    "first": chunk[0].parsed.lineno,
                    "last": chunk[-1].parsed.lineno,
                    "reason": reason,
                },
            )
            for pending in chunk:
                record(
                    pending.parsed,
                    LineOutcome.FAILED,
                    str(interpolate(MSG_LINE_REFUSED, {"reason": reason})),
                )

    def flush() -> None:
        outcomes.sort(key=lambda line: line.lineno)
        if on_line is None:
            report.lines.extend(outcomes)
        else:
            for line in outcomes:
                on_line(line)
        outcomes.clear()
        if on_chunk is not None:
            on_chunk(report)

    def run() -> None:
        preparer = _Preparer(
            parsed_lines,
            inserter,
            in_process=helper_process and inserter is not None and not keep_lines,
        )
        with preparer:
            for items in preparer.chunks():
                chunk = []
                for parsed, outcome, detail in items:
                    if outcome is None:
                        chunk.append(detail)
                    else:
                        record(parsed, outcome, detail)
                if items:
                    report.lines_read = max(report.lines_read, items[-1][0].lineno)
                if chunk:
                    write(chunk)
                flush()

    if strict and not dry_run:
        try:
            with transaction.atomic():
                run()
                if report.invalid:
                    raise LoadAborted(report)
        except LoadAborted:
            report.created = 0
            raise
    else:
        run()
    report.lines.sort(key=lambda line: line.lineno)
    return report


def _database_reason(exc: DatabaseError) -> str:
    """What the database said, one line, short, with anything token-shaped removed."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text)[:300]


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


# --- Batches: staging an upload, and the worker reading, previewing and loading it ------------
# A web request only stores the upload (encrypted) and enqueues the work; `manage.py db_worker`
# does it (accounts.tasks.batch_process), stamping the batch with its progress and a heartbeat.
# Only the command line loads in its own process, streaming (account_batch_load).

MSG_BATCH_NOT_PENDING = _("This upload was already loaded or cancelled.")
MSG_BATCH_ABANDONED = _(
    "The worker stopped while it was working on this batch. Run it again: lines already saved are "
    "skipped as duplicates."
)
MSG_BATCH_NOT_TAKEN = _(
    "No worker took this batch. Check that the worker is running, then run it again."
)
MSG_BATCH_CRASHED = _("The worker failed: %(reason)s")

# A worker stamps its batch after every chunk (a few seconds at most); one silent this long died.
BATCH_HEARTBEAT_TIMEOUT = timedelta(minutes=2)
# A batch no worker has started yet waits behind other work; this long, and no worker is coming.
BATCH_UNCLAIMED_TIMEOUT = timedelta(hours=1)
# What the preview shows in detail; the full list is the problem CSV.
PREVIEW_PROBLEM_ROWS = 1000
PREVIEW_VALID_ROWS = 500
# Raw CSV text compressed into one stored piece.
PROBLEM_CHUNK_CHARS = 256 * 1024
PROBLEM_CSV_HEADER = ("line", "outcome", "email", "reasons")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class BatchNotPending(Exception):
    pass


class _BatchLost(Exception):
    """The batch was cancelled, or taken over by another worker: stop working on it."""


def _count_lines(content: str) -> int:
    # Counted without splitting: a 20 MB paste is a single scan in C, not a million strings.
    breaks = content.count("\n") + content.count("\r") - content.count("\r\n")
    return breaks + (1 if content and content[-1] not in "\r\n" else 0)


def _enqueue(batch_id: int) -> None:
    from accounts.tasks import batch_process

    transaction.on_commit(partial(batch_process.enqueue, batch_id=batch_id))


def account_batch_stage(
    *,
    content: str,
    label: str,
    supplier: str = "",
    source: str = BatchSource.ADMIN,
    filename: str = "",
    user=None,
    confirmed: bool = False,
    dry_run: bool = False,
    strict: bool = False,
    language: str = "",
) -> AccountBatch:
    """Keep an upload, encrypted, and hand it to the worker.

    The worker reads it first (the preview; with `strict` or `dry_run` always), then, once the
    load is confirmed (staff after the preview, or `confirmed` at once, as the API does), saves it.
    """
    now = timezone.now()
    straight_to_load = confirmed and not (dry_run or strict)
    with transaction.atomic():
        batch = AccountBatch.objects.create(
            label=label[:100],
            supplier=supplier[:100],
            source=source,
            status=BatchStatus.LOADING if straight_to_load else BatchStatus.PREVIEWING,
            filename=filename[:255],
            content=content,
            loaded_by=user,
            dry_run=dry_run,
            strict=strict,
            confirmed_at=now if confirmed else None,
            language=language[:16],
            total_lines=_count_lines(content),
            progress_at=now,
        )
        _enqueue(batch.pk)
    return batch


def account_batch_confirm(*, batch_id: int, now: datetime | None = None) -> None:
    """Staff confirmed the preview: the worker saves it. One conditional UPDATE, so a double
    submit loads once."""
    now = now or timezone.now()
    with transaction.atomic():
        claimed = AccountBatch.objects.filter(pk=batch_id, status=BatchStatus.PENDING).update(
            status=BatchStatus.LOADING, confirmed_at=now, progress_at=now, worker_token=None
        )
        if claimed != 1:
            raise BatchNotPending(str(MSG_BATCH_NOT_PENDING))
        _enqueue(batch_id)


def account_batch_cancel(*, batch_id: int) -> None:
    """Drop an upload that is being read, awaits confirmation, or failed: its text (the secrets)
    and its problem list are deleted. A batch being saved cannot be cancelled."""
    with transaction.atomic():
        cancelled = AccountBatch.objects.filter(
            pk=batch_id,
            status__in=[BatchStatus.PREVIEWING, BatchStatus.PENDING, BatchStatus.FAILED],
        ).update(
            status=BatchStatus.CANCELLED,
            content=None,
            worker_token=None,
            finished_at=timezone.now(),
        )
        if cancelled != 1:
            raise BatchNotPending(str(MSG_BATCH_NOT_PENDING))
        BatchProblemChunk.objects.filter(batch_id=batch_id).delete()


def account_batch_retry(*, batch_id: int, now: datetime | None = None) -> None:
    """Run a failed batch again, from where it failed (the preview, or the load). Harmless: lines
    a first run saved are skipped as duplicates."""
    now = now or timezone.now()
    load_again = Q(confirmed_at__isnull=False, dry_run=False, strict=False)
    with transaction.atomic():
        updated = AccountBatch.objects.filter(
            pk=batch_id, status=BatchStatus.FAILED, content__isnull=False
        ).update(
            status=Case(
                When(load_again, then=Value(BatchStatus.LOADING)),
                default=Value(BatchStatus.PREVIEWING),
            ),
            worker_token=None,
            progress_at=now,
            finished_at=None,
            error="",
        )
        if updated != 1:
            raise BatchNotPending(str(MSG_BATCH_NOT_PENDING))
        _enqueue(batch_id)


def account_batch_fail_abandoned(*, now: datetime) -> int:
    """Mark failed every batch whose worker died (heartbeat too old), or that no worker took.

    Its text is kept, so staff can run it again or cancel it. Returns how many were failed.
    """
    running = AccountBatch.objects.filter(status__in=BATCH_RUNNING_STATUSES)
    stale = running.filter(
        Q(worker_token__isnull=False, progress_at__lt=now - BATCH_HEARTBEAT_TIMEOUT)
        | Q(worker_token__isnull=True, progress_at__lt=now - BATCH_UNCLAIMED_TIMEOUT)
    )
    failed = 0
    for pk, token, language in stale.values_list("pk", "worker_token", "language"):
        message = MSG_BATCH_ABANDONED if token else MSG_BATCH_NOT_TAKEN
        with translation.override(language or settings.LANGUAGE_CODE):
            error = str(message)
        failed += running.filter(
            pk=pk, worker_token=token, progress_at__lt=now - BATCH_HEARTBEAT_TIMEOUT
        ).update(status=BatchStatus.FAILED, worker_token=None, error=error, finished_at=now)
    return failed


def account_batch_process(*, batch_id: int) -> None:
    """The worker's part: read the batch (the preview) and/or save it, whichever it waits for."""
    batch = AccountBatch.objects.filter(pk=batch_id).first()
    if batch is None:
        return
    with translation.override(batch.language or settings.LANGUAGE_CODE):
        if batch.status == BatchStatus.PREVIEWING:
            _batch_work(batch, BatchStatus.PREVIEWING)
            batch.refresh_from_db()
        if batch.status == BatchStatus.LOADING:
            _batch_work(batch, BatchStatus.LOADING)


def _batch_work(batch: AccountBatch, status: str) -> None:
    now = timezone.now()
    token = uuid.uuid4()
    fresh = {
        "lines_read": 0,
        "created_count": 0,
        "duplicate_count": 0,
        "invalid_count": 0,
        "flagged_count": 0,
        "failed_count": 0,
        "error": "",
        "detail": {},
    }
    with transaction.atomic():
        claimed = (
            AccountBatch.objects.filter(pk=batch.pk, status=status)
            .filter(Q(worker_token__isnull=True) | Q(progress_at__lt=now - BATCH_HEARTBEAT_TIMEOUT))
            .update(worker_token=token, progress_at=now, **fresh)
        )
        if claimed != 1:
            return  # done, cancelled, or another worker's
        BatchProblemChunk.objects.filter(batch_id=batch.pk).delete()
    batch.refresh_from_db()
    recorder = _BatchRecorder(batch=batch, token=token, status=status)
    loading = status == BatchStatus.LOADING
    try:
        report = account_load(
            lines=text_lines(batch.content),
            batch=batch if loading else None,
            dry_run=not loading,
            keep_lines=True,
            on_line=recorder.line,
            on_chunk=recorder.chunk,
        )
        recorder.close()
    except _BatchLost:
        # A cancel deletes the problem list; a piece this worker stored meanwhile goes too.
        BatchProblemChunk.objects.filter(
            batch_id=batch.pk, batch__status=BatchStatus.CANCELLED
        ).delete()
        return
    except Exception as exc:
        AccountBatch.objects.filter(pk=batch.pk, status=status, worker_token=token).update(
            status=BatchStatus.FAILED,
            worker_token=None,
            error=str(
                interpolate(
                    MSG_BATCH_CRASHED, {"reason": redact(str(exc))[:300] or type(exc).__name__}
                )
            ),
            finished_at=timezone.now(),
        )
        raise
    if loading:
        # Lines a first run saved come back as duplicates of this same batch when it is run again.
        created = Account.objects.filter(batch_id=batch.pk).count()
        duplicates = max(report.duplicates - (created - report.created), 0)
        final = BatchStatus.FAILED if report.failed else BatchStatus.LOADED
        keep_content = final == BatchStatus.FAILED
    else:
        created, duplicates = report.created, report.duplicates
        if batch.dry_run:
            final, keep_content = BatchStatus.CHECKED, False
        elif batch.strict and report.invalid:
            final, keep_content = BatchStatus.ABORTED, False
        else:
            final = BatchStatus.LOADING if batch.confirmed_at else BatchStatus.PENDING
            keep_content = True
    finished = final not in (BatchStatus.PENDING, BatchStatus.LOADING)
    AccountBatch.objects.filter(pk=batch.pk, status=status, worker_token=token).update(
        status=final,
        worker_token=None,
        progress_at=timezone.now(),
        finished_at=timezone.now() if finished else None,
        lines_read=report.lines_read,
        created_count=created,
        duplicate_count=duplicates,
        invalid_count=report.invalid,
        flagged_count=report.flagged_unusable,
        failed_count=report.failed,
        error=str(report.error),
        detail=recorder.detail(),
        **({} if keep_content else {"content": None}),
    )


def _neutralise(text: str) -> str:
    """The text as a spreadsheet shows it, never as a formula it runs."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class _BatchRecorder:
    """What a worker keeps of a batch's lines, in bounded memory: the first problem lines (and
    some valid ones) in detail for the page, every problem line in the stored CSV, and the
    progress counts on the batch row after each chunk."""

    def __init__(self, *, batch: AccountBatch, token, status: str):
        self.batch_id = batch.pk
        self.token = token
        self.status = status
        self.rows: list[dict] = []
        self.problems_shown = self.valid_shown = 0
        self.hidden_problems = self.hidden_valid = 0
        self.seq = 0
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer)
        self.writer.writerow(PROBLEM_CSV_HEADER)

    def line(self, line: LineOutcome) -> None:
        noteworthy = line.outcome != LineOutcome.CREATED or bool(line.parsed.warnings)
        if noteworthy:
            messages = line.messages
            self.writer.writerow(
                (
                    line.lineno,
                    line.outcome,
                    _neutralise(line.parsed.email or ""),
                    _neutralise("; ".join(messages)),
                )
            )
            if self.problems_shown >= PREVIEW_PROBLEM_ROWS:
                self.hidden_problems += 1
                return
            self.problems_shown += 1
        else:
            if self.valid_shown >= PREVIEW_VALID_ROWS:
                self.hidden_valid += 1
                return
            self.valid_shown += 1
            messages = []
        account = line.account
        self.rows.append(
            {
                "lineno": line.lineno,
                "outcome": line.outcome,
                "messages": messages,
                "email": (account.email if account else line.parsed.email) or "",
                "access_token": mask(account.access_token) if account else "",
                "session_token": mask(account.session_token) if account else "",
                "refresh_token": mask(account.refresh_token) if account else "",
                "client_id": (account.client_id or "") if account else "",
                "account_id": (account.account_id or "") if account else "",
                "at_expires_at": account.at_expires_at.isoformat()
                if account and account.at_expires_at
                else None,
                "usable": account.usable if account else None,
            }
        )

    def _store(self, *, final: bool = False) -> None:
        if self.buffer.tell() < (1 if final else PROBLEM_CHUNK_CHARS):
            return
        data = zlib.compress(self.buffer.getvalue().encode(), 6)
        BatchProblemChunk.objects.create(batch_id=self.batch_id, seq=self.seq, data=data)
        self.seq += 1
        self.buffer.seek(0)
        self.buffer.truncate()

    def chunk(self, report: LoadReport) -> None:
        # The batch first: once it is cancelled (or another worker took it), nothing more is stored.
        updated = AccountBatch.objects.filter(
            pk=self.batch_id, status=self.status, worker_token=self.token
        ).update(
            progress_at=timezone.now(),
            lines_read=report.lines_read,
            created_count=report.created,
            duplicate_count=report.duplicates,
            invalid_count=report.invalid,
            flagged_count=report.flagged_unusable,
            failed_count=report.failed,
        )
        if updated != 1:
            raise _BatchLost
        self._store()

    def close(self) -> None:
        self._store(final=True)

    def detail(self) -> dict:
        return {
            "rows": self.rows,
            "hidden_problems": self.hidden_problems,
            "hidden_valid": self.hidden_valid,
        }


def account_batch_problem_csv(*, batch_id: int) -> Iterator[str]:
    """A batch's full problem list as CSV text, piece by piece, as the worker stored it."""
    pieces = (
        BatchProblemChunk.objects.filter(batch_id=batch_id)
        .order_by("seq")
        .values_list("data", flat=True)
    )
    for data in pieces.iterator(chunk_size=20):
        yield zlib.decompress(bytes(data)).decode()


def account_batch_load(
    *,
    lines: Iterable[str],
    label: str,
    source: str,
    supplier: str = "",
    user=None,
    filename: str = "",
    strict: bool = False,
    on_line: Callable[[LineOutcome], None] | None = None,
    helper_process: bool = False,
) -> tuple[AccountBatch, LoadReport]:
    """Load lines as a new batch in this process, streaming, recording the batch and its counts
    (the command line). A chunk the database refused leaves the batch failed with the reason."""
    batch = AccountBatch.objects.create(
        label=label[:100],
        supplier=supplier[:100],
        source=source,
        status=BatchStatus.LOADING,
        filename=filename[:255],
        loaded_by=user,
        confirmed_at=timezone.now(),
        progress_at=timezone.now(),
    )
    try:
        report = account_load(
            lines=lines, batch=batch, strict=strict, on_line=on_line, helper_process=helper_process
        )
    except LoadAborted as exc:
        _batch_finish(batch=batch, report=exc.report, status=BatchStatus.ABORTED)
        raise
    _batch_finish(
        batch=batch,
        report=report,
        status=BatchStatus.FAILED if report.failed else BatchStatus.LOADED,
    )
    return batch, report


def text_lines(content: str):
    """Pasted or posted text as the loader reads it: universal newlines, exactly as the command
    reads a file, so line numbers agree everywhere."""
    return io.StringIO(content, newline=None)


def _batch_finish(*, batch: AccountBatch, report: LoadReport, status: str) -> None:
    created = 0 if status == BatchStatus.ABORTED else report.created
    AccountBatch.objects.filter(pk=batch.pk).update(
        status=status,
        content=None,
        finished_at=timezone.now(),
        lines_read=report.lines_read,
        created_count=created,
        duplicate_count=report.duplicates,
        invalid_count=report.invalid,
        flagged_count=report.flagged_unusable if created else 0,
        failed_count=report.failed,
        error=str(report.error),
    )
    batch.refresh_from_db()


RETIRABLE = (AccountStatus.AVAILABLE, AccountStatus.REJECTED)
LOG_RETIRED = "Retired."
LOG_NOTES = "Changed notes."


def _lock(queryset):
    # SQLite has no row locks (select_for_update does nothing there); its IMMEDIATE transactions
    # already hold the database's one write lock from BEGIN, so the rows cannot change under us.
    return queryset.select_for_update() if connection.features.has_select_for_update else queryset


def account_retire(*, account_ids: Iterable[int], by) -> list[Account]:
    """Take accounts out of the pool for good, with an admin-log row per account.

    Only accounts nobody is working on can be retired: a reserved account is being imported right
    now and settles on its own; a consumed one is already in the manager.
    """
    with transaction.atomic():
        targets = list(
            _lock(
                Account.objects.filter(pk__in=list(account_ids), status__in=RETIRABLE).order_by(
                    "pk"
                )
            )
        )
        changed = Account.objects.filter(
            pk__in=[a.pk for a in targets], status__in=RETIRABLE
        ).update(status=AccountStatus.RETIRED, updated_at=timezone.now())
        if changed != len(targets):  # pragma: no cover - the lock above makes this impossible
            raise RuntimeError("Accounts changed while locked.")
        _log(by=by, objects=targets, message=LOG_RETIRED)
    return targets


def account_set_notes(*, account: Account, notes: str, by) -> None:
    """Only the notes column is written: a full-row save could undo a concurrent reservation."""
    with transaction.atomic():
        Account.objects.filter(pk=account.pk).update(notes=notes, updated_at=timezone.now())
        _log(by=by, objects=[account], message=LOG_NOTES)
    account.notes = notes


# --- Staff actions: requeue, retry, release --------------------------------------------------
# Each is one conditional UPDATE whose row count is checked, with its admin-log rows written in
# the same transaction.

# The fields staff may replace when requeueing, in the order the line for the parser is built:
# in the ----format the first JWT is read as the access token, so it must come before the session token.
REQUEUE_FIELDS = (
    "email",
    "access_token",
    "session_token",
    "refresh_token",
    "client_id",
    "account_id",
)

MSG_NOT_REJECTED = _("Only a rejected account can be edited and requeued; this one is %(status)s.")
MSG_REQUEUE_MISREAD = _("This was not read as the %(field)s: check that it is in the right box.")
MSG_REQUEUE_UNUSABLE = _("Not requeued, it could still not be imported: %(reason)s")
MSG_REQUEUE_DUPLICATE = _("Another pool account (#%(id)s) has the same %(what)s.")
MSG_REQUEUE_SEALED = _(
    "The stored %(field)s cannot be decrypted with the configured keys: enter it again."
)
MSG_REQUEUE_CONFLICT = _(
    "Another pool account was given the same credentials meanwhile; nothing was changed."
)
_DUPLICATE_WHAT = {
    "identity_hash": _("email and account id"),
    "access_token_hash": _("access token"),
    "session_token_hash": _("session token"),
    "refresh_token_hash": _("refresh token"),
}
LOG_REQUEUED = "Edited (%s) and requeued."
LOG_REQUEUED_UNCHANGED = "Requeued unchanged."

# Held for staff: after unknown outcomes, or sealed with a key that was missing (and is back).
RETRYABLE = Q(status=AccountStatus.REJECTED) | Q(
    status=AccountStatus.AVAILABLE,
    usable=False,
    unusable_reason__in=[UnusableReason.UNKNOWN_OUTCOMES, UnusableReason.KEY_MISSING],
)
LOG_RETRIED = "Retried: back in the pool."
LOG_RELEASED = (
    "Released a reservation whose lease had expired; counted as an attempt with an unknown outcome."
)


class RequeueRefused(Exception):
    """Why an account was not requeued: (form field or None, message) pairs; nothing was changed."""

    def __init__(self, problems: list[tuple[str | None, object]]):
        super().__init__("; ".join(str(message) for _field, message in problems))
        self.problems = problems


def _fresh_retry_budget(now: datetime) -> dict:
    """The retry counters of an account staff put back, as UPDATE expressions.

    A fresh budget, not a clean slate: an account with an earlier attempt of unknown outcome may
    have landed, and that knowledge decides what a later "already present" answer means. So it
    keeps one unknown attempt, due at once; an account without one starts from zero.
    """
    return {
        "unknown_attempts": Least(F("unknown_attempts"), Value(1)),
        "retry_after": Case(
            When(unknown_attempts__gt=0, then=Value(now)),
            default=None,
            output_field=DateTimeField(),
        ),
    }


@sensitive_variables("changes", "material", "line", "parsed", "got", "pending")
def account_requeue(
    *, account_id: int, changes: dict[str, str], by, now: datetime | None = None
) -> Account:
    """Put a rejected account back in the pool after staff edited it. Blank changes keep a value.

    The edited account is read by the one parser, as a line of the manager's ----format, so it
    passes exactly the checks a load applies; each given value must be read as the field it was
    given for; it must be importable; and its recomputed lookup hashes must not match another
    pool account. Raises RequeueRefused with every problem found.
    """
    unknown = set(changes) - set(REQUEUE_FIELDS)
    if unknown:
        raise ValueError(f"not requeue fields: {sorted(unknown)}")
    now = now or timezone.now()
    account = Account.objects.get(pk=account_id)
    if account.status != AccountStatus.REJECTED:
        raise RequeueRefused([(None, MSG_NOT_REJECTED % {"status": account.get_status_display()})])
    sealed = [
        f
        for f in REQUEUE_FIELDS
        if isinstance(getattr(account, f), crypto.Undecryptable) and not changes.get(f)
    ]
    if sealed:
        raise RequeueRefused(
            [
                (
                    f,
                    interpolate(
                        MSG_REQUEUE_SEALED, {"field": Account._meta.get_field(f).verbose_name}
                    ),
                )
                for f in sealed
            ]
        )
    material = {f: (changes.get(f) or getattr(account, f) or "").strip() for f in REQUEUE_FIELDS}
    line = "----".join(value for value in material.values() if value)
    min_lifetime = timedelta(hours=settings.POOL_MIN_AT_LIFETIME_HOURS)
    parsed = next(iter(parse_lines([line], now=now, min_at_lifetime=min_lifetime)), None)
    if parsed is not None and not parsed.valid:
        raise RequeueRefused([(None, problem.message) for problem in parsed.errors])
    misread = [
        f
        for f in REQUEUE_FIELDS
        if material[f] and (parsed is None or not _read_as(parsed.account, f, material[f]))
    ]
    if misread:
        problems = []
        for f in misread:
            label = Account._meta.get_field(f).verbose_name
            problems.append(
                (f if changes.get(f) else None, interpolate(MSG_REQUEUE_MISREAD, {"field": label}))
            )
        raise RequeueRefused(problems)
    if _unusable_code(parsed):
        reason = next(p.message for p in parsed.warnings if p.code in UnusableReason.values)
        raise RequeueRefused([(None, interpolate(MSG_REQUEUE_UNUSABLE, {"reason": reason}))])
    pending = _pending(parsed)
    existing = account_existing_digests(digests=pending.lookups)
    clashes = [
        (
            None,
            interpolate(
                MSG_REQUEUE_DUPLICATE, {"id": existing[d], "what": _DUPLICATE_WHAT[column]}
            ),
        )
        for column, values in pending.lookups.items()
        for d in values
        if existing.get(d, account.pk) != account.pk
    ]
    if clashes:
        raise RequeueRefused(clashes)
    got = parsed.account
    try:
        with transaction.atomic():
            updated = Account.objects.filter(pk=account.pk, status=AccountStatus.REJECTED).update(
                email=got.email or "",
                access_token=got.access_token,
                session_token=got.session_token,
                refresh_token=got.refresh_token,
                access_token_hint=mask(got.access_token),
                session_token_hint=mask(got.session_token),
                refresh_token_hint=mask(got.refresh_token),
                client_id=got.client_id or "",
                account_id=got.account_id or "",
                **pending.digests,
                at_email=got.at_email or "",
                at_expires_at=got.at_expires_at,
                usable=True,
                unusable_reason="",
                status=AccountStatus.AVAILABLE,
                last_error="",
                updated_at=now,
                **_fresh_retry_budget(now),
            )
            if updated != 1:
                account.refresh_from_db(fields=["status"])
                raise RequeueRefused(
                    [(None, MSG_NOT_REJECTED % {"status": account.get_status_display()})]
                )
            edited = [f for f in REQUEUE_FIELDS if changes.get(f)]
            message = LOG_REQUEUED % ", ".join(edited) if edited else LOG_REQUEUED_UNCHANGED
            _log(by=by, objects=[account], message=message)
    except IntegrityError:
        # A load or another requeue stored the same credentials between the check and the UPDATE.
        raise RequeueRefused([(None, MSG_REQUEUE_CONFLICT)]) from None
    account.refresh_from_db()
    return account


def _read_as(parsed: ParsedAccount, field: str, value: str) -> bool:
    # The parser lower-cases emails and account ids; everything else it keeps as given.
    expected = value.lower() if field in ("email", "account_id") else value
    return getattr(parsed, field) == expected


def account_retry(*, account_ids: Iterable[int], by, now: datetime | None = None) -> list[Account]:
    """Back to the pool: accounts the manager rejected, and those held after unknown outcomes."""
    now = now or timezone.now()
    with transaction.atomic():
        targets = list(
            _lock(Account.objects.filter(RETRYABLE, pk__in=list(account_ids)).order_by("pk"))
        )
        changed = Account.objects.filter(RETRYABLE, pk__in=[a.pk for a in targets]).update(
            status=AccountStatus.AVAILABLE,
            usable=True,
            unusable_reason="",
            last_error="",
            updated_at=now,
            **_fresh_retry_budget(now),
        )
        if changed != len(targets):  # pragma: no cover - the lock above makes this impossible
            raise RuntimeError("Accounts changed while locked.")
        _log(by=by, objects=targets, message=LOG_RETRIED)
    return targets


@dataclass
class ReleaseResult:
    released: list[Account]
    # Reserved under a lease that has not run out: a worker is importing them right now.
    in_flight: list[Account]


def account_release_stuck(
    *, account_ids: Iterable[int], by, now: datetime | None = None
) -> ReleaseResult:
    """Return reservations whose lease expired to the pool, as account_recover_expired_leases does.

    Whether the dead worker's request reached the manager is unknown, so each counts one unknown
    attempt and is due for re-sending at once. A lease that has not expired is left alone.
    """
    now = now or timezone.now()
    ids = list(account_ids)
    reserved = Account.objects.filter(pk__in=ids, status=AccountStatus.RESERVED)
    with transaction.atomic():
        targets = list(_lock(reserved.filter(lease_expires_at__lt=now).order_by("pk")))
        changed = Account.objects.filter(
            pk__in=[a.pk for a in targets], status=AccountStatus.RESERVED, lease_expires_at__lt=now
        ).update(**_lease_expired_changes(now))
        if changed != len(targets):  # pragma: no cover - the lock above makes this impossible
            raise RuntimeError("Accounts changed while locked.")
        _log(by=by, objects=targets, message=LOG_RELEASED)
    return ReleaseResult(
        released=targets, in_flight=list(reserved.filter(lease_expires_at__gte=now).order_by("pk"))
    )


def _log(*, by, objects, message: str) -> None:
    from django.contrib.admin.models import CHANGE, LogEntry

    if by is not None and objects:
        LogEntry.objects.log_actions(
            user_id=by.pk, queryset=objects, action_flag=CHANGE, change_message=message
        )


@dataclass
class RotationResult:
    key_id: str
    examined: int = 0
    rewritten: int = 0
    others_rewritten: int = 0
    # Rows no configured key opens: left as they are (see account_key_census for their key ids).
    unopenable: int = 0


@dataclass
class ResealResult:
    examined: int = 0
    rewritten: int = 0
    unopenable: int = 0


ROTATE_CHUNK = 500


def account_rotate_keys() -> RotationResult:
    """Re-seal every encrypted column of every app under the newest key and the current format
    (bound to its table and column), and re-hash the pool's lookup hashes under the newest key.

    Encrypted columns are found by field type, so the pool needs to know nothing of the apps that
    borrow its encryption (staged uploads, notification URLs…). See encrypted_rows_reseal for how
    an edit made meanwhile is never lost.
    """
    result = RotationResult(key_id=crypto.current_key_id().hex())
    for model in apps.get_models():
        if model is Account:
            done = encrypted_rows_reseal(model=Account, rehash=_account_hashes)
            result.examined, result.rewritten = done.examined, done.rewritten
        elif any(isinstance(f, EncryptedTextField) for f in model._meta.concrete_fields):
            done = encrypted_rows_reseal(model=model)
            result.others_rewritten += done.rewritten
        else:
            continue
        result.unopenable += done.unopenable
    return result


def _account_hashes(row) -> dict:
    # The hints too: a token that was unopenable when its hint was taken shows again once re-sealed.
    hints = {f"{name}_hint": token_hint(getattr(row, name)) for name in TOKEN_FIELDS}
    return {**lookup_hashes(**{f: getattr(row, f) for f in MATERIAL_FIELDS}), **hints}


def encrypted_rows_reseal(*, model, rehash=None) -> ResealResult:
    """Re-seal the encrypted columns of `model`'s rows that are not yet under the newest key in the
    current format, in id-ordered chunks, each in one transaction with its rows locked.

    The lock (SELECT … FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE transaction holds the write
    lock from BEGIN) is what keeps an edit made during the rotation: it waits for the chunk, or the
    chunk waits for it and re-reads its value. Only the encrypted columns (and `rehash(row)`'s
    columns) are written, so a run reserving or settling the same rows is not undone. Rows that
    no configured key opens are left as they are and counted. Also used by the migrations that
    bound existing ciphertexts to their columns (with their historical models).
    """
    fields = tuple(f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField))
    columns = tuple(model._meta.get_field(name).column for name in fields)
    loaded = ("pk", *fields, *(MATERIAL_FIELDS if rehash else ()))
    result = ResealResult()
    last = 0
    while True:
        with transaction.atomic():
            rows = list(
                _lock(model.objects.filter(pk__gt=last).order_by("pk")).only(
                    *dict.fromkeys(loaded)
                )[:ROTATE_CHUNK]
            )
            if not rows:
                break
            last = rows[-1].pk
            stored = _raw_blobs(model, [row.pk for row in rows], columns)
            for row in rows:
                result.examined += 1
                if all(crypto.is_current(blob) for blob in stored[row.pk] if blob is not None):
                    continue
                values = {name: getattr(row, name) for name in fields}
                if any(isinstance(value, crypto.Undecryptable) for value in values.values()):
                    result.unopenable += 1
                    continue
                model.objects.filter(pk=row.pk).update(**values, **(rehash(row) if rehash else {}))
                result.rewritten += 1
    return result


def _raw_blobs(model, pks: list[int], columns: tuple[str, ...]) -> dict[int, tuple]:
    """The stored ciphertexts' headers (version and key id) of `columns`, read without decrypting."""
    table = connection.ops.quote_name(model._meta.db_table)
    pk = connection.ops.quote_name(model._meta.pk.column)
    heads = ", ".join(
        f"SUBSTR({connection.ops.quote_name(c)}, 1, {crypto.HEADER_BYTES})" for c in columns
    )
    placeholders = ", ".join(["%s"] * len(pks))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {pk}, {heads} FROM {table} WHERE {pk} IN ({placeholders})", pks)
        return {
            row[0]: tuple(None if blob is None else bytes(blob) for blob in row[1:])
            for row in cursor.fetchall()
        }


def _raw_key_ids(model, pks: list[int], fields: tuple[str, ...]) -> dict[int, set[bytes]]:
    """The key ids of the stored ciphertexts, read without decrypting."""
    return {
        pk: {crypto.key_id_of(blob) for blob in blobs if blob is not None}
        for pk, blobs in _raw_blobs(model, pks, fields).items()
    }


# --- Leases: reserving accounts for an import and settling them ------------------------------
# The pool knows leases, not the manager: a caller reserves accounts under a lease id, and then
# settles each one. Every change is one conditional UPDATE that checks the status and the lease,
# so an account is never taken by two leases and a late answer cannot settle a recovered one.
# Callers write their history row in the same transaction.

MSG_LEASE_EXPIRED = (
    "Recovered after its lease expired: the worker stopped mid-import, outcome unknown."
)


def account_reserve_batch(
    *, count: int, lease_id, lease_until: datetime, now: datetime, unresolved: bool = False
) -> list[Account]:
    """Reserve up to `count` accounts, oldest first, under `lease_id`.

    Fresh accounts by default; with `unresolved`, those whose earlier import had an unknown
    outcome and whose retry is due. On PostgreSQL the candidates are locked in id order with
    SKIP LOCKED, so concurrent runs take different rows instead of queueing; on SQLite the
    IMMEDIATE transaction serialises writers. Either way the UPDATE re-checks the status.

    Each reserved account is decrypted on its own, inside the reserving transaction: one that no
    configured key opens is held for staff (back to available, flagged unusable, the key id in
    its last error) in that same transaction, so it is never returned, sent or counted as an
    attempt, and the pick moves on to the next accounts.
    """
    taken: list[Account] = []
    while len(taken) < count:
        opened, held = _reserve_once(
            count=count - len(taken),
            lease_id=lease_id,
            lease_until=lease_until,
            now=now,
            unresolved=unresolved,
        )
        taken.extend(opened)
        if not held:
            break
    return sorted(taken, key=lambda account: account.pk)


def _reserve_once(
    *, count: int, lease_id, lease_until: datetime, now: datetime, unresolved: bool
) -> tuple[list[Account], int]:
    """(accounts reserved that open, how many were held instead) in one transaction."""
    available = Account.objects.filter(status=AccountStatus.AVAILABLE, usable=True)
    if unresolved:
        candidates = available.filter(unknown_attempts__gt=0, retry_after__lte=now).order_by(
            "retry_after", "id"
        )
    else:
        candidates = available.filter(unknown_attempts=0).order_by("id")
    with transaction.atomic():
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        ids = list(candidates.values_list("id", flat=True)[:count])
        if not ids:
            return [], 0
        taken = Account.objects.filter(pk__in=ids, status=AccountStatus.AVAILABLE).update(
            status=AccountStatus.RESERVED,
            lease_id=lease_id,
            lease_expires_at=lease_until,
            updated_at=now,
        )
        if taken != len(ids):  # pragma: no cover - the lock above makes this impossible
            raise RuntimeError("Accounts changed while locked.")
        opened, held = [], 0
        for account in Account.objects.filter(pk__in=ids, lease_id=lease_id).order_by("id"):
            sealed = account_undecryptable(account=account)
            if sealed is None:
                opened.append(account)
            else:
                _hold_sealed(account=account, sealed=sealed, lease_id=lease_id, now=now)
                held += 1
    return opened, held


SECRET_FIELDS = ("access_token", "session_token", "refresh_token")
MSG_HELD_KEY_MISSING = (
    "Held, never sent: sealed with a key this service does not have (key id %s). Add that key to "
    "POOL_ENCRYPTION_KEY on every process, restart them, then retry the account."
)
MSG_HELD_UNDECRYPTABLE = (
    "Held, never sent: its stored tokens fail authentication under the configured key (key id %s): "
    "they were altered, or the key is not the one that sealed them. Retire the account or load it again."
)


def account_undecryptable(*, account: Account) -> crypto.Undecryptable | None:
    """The first of the account's tokens that no configured key opens, or None if all open."""
    return next(
        (
            v
            for v in (getattr(account, f) for f in SECRET_FIELDS)
            if isinstance(v, crypto.Undecryptable)
        ),
        None,
    )


def _hold_sealed(
    *, account: Account, sealed: crypto.Undecryptable, lease_id, now: datetime
) -> None:
    """End the reservation of an account that cannot be opened, and hold it for staff."""
    if sealed.cause == crypto.CAUSE_UNKNOWN_KEY:
        reason, error = UnusableReason.KEY_MISSING, MSG_HELD_KEY_MISSING % sealed.key_id_hex
    else:
        reason, error = (
            UnusableReason.UNDECRYPTABLE,
            MSG_HELD_UNDECRYPTABLE % (sealed.key_id_hex or "none"),
        )
    held = Account.objects.filter(
        pk=account.pk, status=AccountStatus.RESERVED, lease_id=lease_id
    ).update(
        status=AccountStatus.AVAILABLE,
        lease_id=None,
        lease_expires_at=None,
        usable=False,
        unusable_reason=reason,
        last_error=error,
        updated_at=now,
    )
    if held != 1:  # pragma: no cover - reserved under this lease in this very transaction
        raise RuntimeError("Account changed while locked.")
    logger.warning("Account #%s held for staff: %s", account.pk, error)


def _settle(*, account_id: int, lease_id, now: datetime, **changes) -> bool:
    return (
        Account.objects.filter(
            pk=account_id, status=AccountStatus.RESERVED, lease_id=lease_id
        ).update(lease_id=None, lease_expires_at=None, updated_at=now, **changes)
        == 1
    )


def account_settle_consumed(*, account_id: int, lease_id, now: datetime) -> bool:
    """The manager confirmed the import: the account is spent, and counted in its day's rollup.

    The only writer of CONSUMED (and nothing moves an account out of it), so the rollup counts
    every consumption exactly once: in the same transaction, only when the UPDATE settled the row.
    """
    with transaction.atomic(savepoint=False):
        settled = _settle(
            account_id=account_id,
            lease_id=lease_id,
            now=now,
            status=AccountStatus.CONSUMED,
            consumed_at=now,
            attempts=F("attempts") + 1,
            retry_after=None,
            last_error="",
        )
        if settled:
            consumption_count(at=now)
    return settled


_COUNT_CONSUMPTION_SQL = (
    "INSERT INTO accounts_consumptionday (day, consumed) VALUES (%s, %s)"
    " ON CONFLICT (day) DO UPDATE SET consumed = accounts_consumptionday.consumed + excluded.consumed"
)


def consumption_count(*, at: datetime, accounts: int = 1) -> None:
    """Add `accounts` consumed at `at` to that day's rollup (the day in settings.TIME_ZONE): one upsert.

    Call it in the transaction that marks them consumed.
    """
    day = timezone.localdate(at)
    with connection.cursor() as cursor:
        cursor.execute(
            _COUNT_CONSUMPTION_SQL, [connection.ops.adapt_datefield_value(day), accounts]
        )


def account_settle_rejected(
    *, account_id: int, lease_id, now: datetime, error: str, sent: bool = True
) -> bool:
    """The manager refused the account (or it was not sendable): staff may fix and requeue it."""
    return _settle(
        account_id=account_id,
        lease_id=lease_id,
        now=now,
        status=AccountStatus.REJECTED,
        attempts=F("attempts") + int(sent),
        retry_after=None,
        last_error=error,
    )


def account_settle_unknown(
    *, account_id: int, lease_id, now: datetime, error: str, retry_after: datetime | None
) -> bool:
    """No answer to rely on: back to the pool, to be re-sent after `retry_after`.

    With `retry_after` None the retries are used up: the account is held (flagged unusable)
    until staff look at it, since it may well be in the manager already.
    """
    held = retry_after is None
    return _settle(
        account_id=account_id,
        lease_id=lease_id,
        now=now,
        status=AccountStatus.AVAILABLE,
        attempts=F("attempts") + 1,
        unknown_attempts=F("unknown_attempts") + 1,
        retry_after=now if held else retry_after,
        last_error=error,
        **({"usable": False, "unusable_reason": UnusableReason.UNKNOWN_OUTCOMES} if held else {}),
    )


def account_release(*, account_id: int, lease_id, now: datetime) -> bool:
    """Back to the pool unsent (the run stopped before sending it): nothing to record."""
    return _settle(
        account_id=account_id, lease_id=lease_id, now=now, status=AccountStatus.AVAILABLE
    )


def _lease_expired_changes(now: datetime) -> dict:
    # Whether the request reached the manager is unknown: one unknown attempt, due for re-sending
    # at once, so an "already present" answer then settles it as consumed.
    return {
        "status": AccountStatus.AVAILABLE,
        "lease_id": None,
        "lease_expires_at": None,
        "attempts": F("attempts") + 1,
        "unknown_attempts": F("unknown_attempts") + 1,
        "retry_after": now,
        "last_error": MSG_LEASE_EXPIRED,
        "updated_at": now,
    }


def account_recover_expired_leases(*, now: datetime) -> list[tuple[int, object]]:
    """Return every account whose lease ran out (its worker died) to the pool.

    Whether the dead worker's request reached the manager is unknown, so each counts one unknown
    attempt and is due for re-sending at once: an "already present" answer then settles it as
    consumed. Returns (account id, expired lease id) pairs for the caller's history rows.
    """
    with transaction.atomic():
        expired = list(
            _lock(
                Account.objects.filter(
                    status=AccountStatus.RESERVED, lease_expires_at__lt=now
                ).order_by("pk")
            ).values_list("pk", "lease_id")
        )
        if expired:
            Account.objects.filter(
                pk__in=[pk for pk, _ in expired], status=AccountStatus.RESERVED
            ).update(**_lease_expired_changes(now))
    return expired
