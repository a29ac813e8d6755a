"""Loading accounts: one upload, streamed through the parser into the pool (account_load), or a
whole file as a new batch from the command line (account_batch_load)."""

from __future__ import annotations

import gc
import io
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from accounts.models import (
    AccountBatch,
    BatchStatus,
)
from accounts.parser import ParsedLine, parse_lines
from accounts.services.bulk import _drop_pool_duplicates, _insert_chunk, _Inserter
from accounts.services.preparing import _Pending, _Preparer
from accounts.services.reports import (
    MSG_CHUNK_REFUSED,
    MSG_LINE_REFUSED,
    LineOutcome,
    LoadAborted,
    LoadReport,
    _database_reason,
    _unusable_code,
)
from accounts.tokens import interpolate

logger = logging.getLogger(__name__)

# With someone watching the progress (the worker's batch page), a chunk is cut once preparing it
# and (by the last chunk's cost a line) writing it would take this long, so the counts move at
# least once a second even on a busy machine (bench/bench_upload.py: with a fixed 0.5 s of
# preparing, the longest gap between progress stamps of a 20,000-line load was 0.91 s; with 0.7 s
# of both, 0.95 s, the first chunks' writes costing more than the estimate).
CHUNK_SECONDS = 0.5


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
            seconds=None if on_chunk is None else CHUNK_SECONDS,
        )
        with preparer:
            for chunk, others, lineno in preparer.chunks():
                started = time.monotonic()
                for args in others:
                    record(*args)
                report.lines_read = max(report.lines_read, lineno)
                if chunk:
                    write(chunk)
                flush()
                preparer.write_cost = (time.monotonic() - started) / max(len(chunk), 1)

    with _fewer_collections():
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


@contextmanager
def _fewer_collections():
    """The garbage collector's first generation run every 50,000 allocations, not 700, while a
    load runs (in its helper too, which inherits it). A load allocates some 20 objects a line,
    kept until their chunk is written, and freed by reference counting; with the default the
    collector went over them ~30 times a chunk: 11% of each process's CPU (20,000 lines: the
    helper 1.86 s → 1.65 s, the writer 1.10 s → 0.97 s)."""
    before = gc.get_threshold()
    gc.set_threshold(50_000, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


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
