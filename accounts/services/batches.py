"""Staged uploads (batches): staging, confirming, cancelling and retrying them; their problem list."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Exists, OuterRef, Q, Value, When
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

from accounts.models import (
    BATCH_RUNNING_STATUSES,
    AccountBatch,
    BatchProblemChunk,
    BatchSource,
    BatchStatus,
    BatchUpload,
    upload_pieces,
)
from poolsite.queueing import task_enqueue

logger = logging.getLogger(__name__)


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


class BatchNotPending(Exception):
    pass


class _BatchLost(Exception):
    """The batch was cancelled, or taken over by another worker: stop working on it."""


def _count_lines(content: str) -> int:
    # Counted without splitting: a 20 MB paste is a single scan in C, not a million strings.
    breaks = content.count("\n") + content.count("\r") - content.count("\r\n")
    return breaks + (1 if content and content[-1] not in "\r\n" else 0)


# The path django-tasks-db stores in the task row; queued by name (poolsite/queueing.py), so this
# module never imports accounts.tasks, which imports it.
BATCH_PROCESS = "accounts.tasks.batch_process"


def _enqueue(batch_id: int) -> None:
    transaction.on_commit(partial(task_enqueue, path=BATCH_PROCESS, batch_id=batch_id))


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
            loaded_by=user,
            dry_run=dry_run,
            strict=strict,
            confirmed_at=now if confirmed else None,
            language=language[:16],
            total_lines=_count_lines(content),
            progress_at=now,
        )
        BatchUpload.objects.bulk_create(
            BatchUpload(batch=batch, seq=seq, content=piece)
            for seq, piece in enumerate(upload_pieces(content))
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
            worker_token=None,
            finished_at=timezone.now(),
        )
        if cancelled != 1:
            raise BatchNotPending(str(MSG_BATCH_NOT_PENDING))
        BatchUpload.objects.filter(batch_id=batch_id).delete()
        BatchProblemChunk.objects.filter(batch_id=batch_id).delete()


def account_batch_retry(*, batch_id: int, now: datetime | None = None) -> None:
    """Run a failed batch again, from where it failed (the preview, or the load). Harmless: lines
    a first run saved are skipped as duplicates."""
    now = now or timezone.now()
    load_again = Q(confirmed_at__isnull=False, dry_run=False, strict=False)
    with transaction.atomic():
        updated = AccountBatch.objects.filter(
            Exists(BatchUpload.objects.filter(batch_id=OuterRef("pk"))),
            pk=batch_id,
            status=BatchStatus.FAILED,
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


def account_batch_problem_csv(*, batch_id: int) -> Iterator[str]:
    """A batch's full problem list as CSV text, piece by piece, as the worker stored it."""
    pieces = (
        BatchProblemChunk.objects.filter(batch_id=batch_id)
        .order_by("seq")
        .values_list("data", flat=True)
    )
    for data in pieces.iterator(chunk_size=20):
        yield zlib.decompress(bytes(data)).decode()
