"""The worker's part of a batch: reading it (the preview) and/or saving it, with progress."""

from __future__ import annotations

import csv
import io
import logging
import uuid
import zlib

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone, translation

from accounts.models import (
    Account,
    AccountBatch,
    BatchProblemChunk,
    BatchStatus,
    BatchUpload,
)
from accounts.services.batches import (
    BATCH_HEARTBEAT_TIMEOUT,
    MSG_BATCH_CRASHED,
    PREVIEW_PROBLEM_ROWS,
    PREVIEW_VALID_ROWS,
    PROBLEM_CHUNK_CHARS,
    PROBLEM_CSV_HEADER,
    _BatchLost,
)
from accounts.services.loading import account_load, text_lines
from accounts.services.reports import LineOutcome, LoadReport
from accounts.tokens import interpolate, mask
from poolsite.text import csv_cell_safe, redact

logger = logging.getLogger(__name__)


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
            lines=_upload_lines(batch.pk),
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
    with transaction.atomic():
        ended = AccountBatch.objects.filter(pk=batch.pk, status=status, worker_token=token).update(
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
        )
        # The text goes with the batch's last state change, once nothing can load it any more.
        if ended == 1 and not keep_content:
            BatchUpload.objects.filter(batch_id=batch.pk).delete()


def _upload_lines(batch_id: int):
    """The upload's lines, piece by piece as they are needed: one query a piece (no cursor stays
    open across the load's own writes on the same connection)."""
    pieces = BatchUpload.objects.filter(batch_id=batch_id)
    for seq in list(pieces.order_by("seq").values_list("seq", flat=True)):
        piece = pieces.filter(seq=seq).values_list("content", flat=True).first()
        if piece is None:
            raise _BatchLost  # cancelled meanwhile: the pieces went with it
        yield from text_lines(piece)


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
                    csv_cell_safe(line.parsed.email or ""),
                    csv_cell_safe("; ".join(messages)),
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
