"""CSV exports of the import history and of consumed accounts, streamed row by row.

Secret-free by construction: rows are read with values_list naming only plain columns, so no
token is ever loaded (let alone decrypted), and the manager's text is redacted once more on the
way out. Every text cell that a spreadsheet would run as a formula is neutralised.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time, timedelta

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from accounts.selectors import account_consumed_rows
from poolsite.text import csv_cell_safe, redact
from webhooks.models import ImportAttempt

# Rows fetched per round trip; on PostgreSQL a server-side cursor, so memory stays flat.
CHUNK = 2000


ATTEMPT_HEADER = (
    "id",
    "created_at",
    "account",
    "email",
    "run",
    "mode",
    "sent",
    "http_status",
    "outcome",
    "duration_ms",
    "manager_message",
    "error",
)
_ATTEMPT_COLUMNS = (
    "id",
    "created_at",
    "account_id",
    "account__email",
    "run_id",
    "mode",
    "sent",
    "http_status",
    "outcome",
    "duration_ms",
    "manager_message",
    "error",
)
_REDACTED_ATTEMPT_COLUMNS = frozenset(
    _ATTEMPT_COLUMNS.index(name) for name in ("manager_message", "error")
)

CONSUMED_HEADER = ("id", "email", "account_id", "consumed_at", "batch")
_CONSUMED_COLUMNS = ("id", "email", "account_id", "consumed_at", "batch__label")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return timezone.localtime(value).isoformat(timespec="seconds")
    return csv_cell_safe(str(value))


class _Echo:
    """csv.writer writes to a file; this file hands each line straight back."""

    def write(self, line: str) -> str:
        return line


def _lines(header: Iterable[str], rows: Iterable[tuple]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    # A byte-order mark, so spreadsheet programs read the file as UTF-8 (emails, Chinese text).
    yield "\ufeff" + writer.writerow(header)
    for row in rows:
        yield writer.writerow([_cell(value) for value in row])


def _response(
    *, header: Iterable[str], rows: Iterable[tuple], filename: str
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_lines(header, rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def period_bounds(*, first: date, last: date) -> tuple[datetime, datetime]:
    """From the start of `first` to the end of `last` (both included), in the current time zone."""
    since = timezone.make_aware(datetime.combine(first, time.min))
    until = timezone.make_aware(datetime.combine(last + timedelta(days=1), time.min))
    return since, until


def _attempt_rows(queryset: QuerySet) -> Iterator[tuple]:
    for row in queryset.values_list(*_ATTEMPT_COLUMNS).iterator(chunk_size=CHUNK):
        yield tuple(
            redact(value) if i in _REDACTED_ATTEMPT_COLUMNS else value
            for i, value in enumerate(row)
        )


def attempt_export_csv(*, queryset: QuerySet, filename: str) -> StreamingHttpResponse:
    """The import attempts of `queryset` (e.g. a filtered admin list), in its order."""
    return _response(header=ATTEMPT_HEADER, rows=_attempt_rows(queryset), filename=filename)


def attempt_export_period_csv(*, first: date, last: date) -> StreamingHttpResponse:
    """Every import attempt made from `first` to `last`, oldest first (the index on created_at)."""
    since, until = period_bounds(first=first, last=last)
    queryset = ImportAttempt.objects.filter(created_at__gte=since, created_at__lt=until).order_by(
        "created_at", "id"
    )
    return attempt_export_csv(queryset=queryset, filename=f"import-attempts_{first}_{last}.csv")


def account_consumed_export_csv(*, first: date, last: date) -> StreamingHttpResponse:
    """Accounts the manager confirmed from `first` to `last`: who they were, never their tokens."""
    since, until = period_bounds(first=first, last=last)
    rows = account_consumed_rows(since=since, until=until, columns=_CONSUMED_COLUMNS, chunk=CHUNK)
    return _response(
        header=CONSUMED_HEADER, rows=rows, filename=f"consumed-accounts_{first}_{last}.csv"
    )


BATCH_REPORT_HEADER = (
    "kind",
    "batch",
    "label",
    "supplier",
    "batches",
    "loaded",
    "consumed",
    "rejected",
    "held",
    "active",
    "full",
    "expired",
    "error",
    "banned",
    "gone",
    "not_followed",
    "never_checked",
    "median_days_to_ban",
    "survival_7d_percent",
    "survival_7d_of",
    "survival_30d_percent",
    "survival_30d_of",
    "top_rejection_reasons",
)


def batch_report_csv(*, report: dict, filename: str) -> StreamingHttpResponse:
    """The batches page as CSV: counts, statuses and reasons (redacted), never a token."""

    def rows():
        for kind, entries in (("batch", report["batches"]), ("supplier", report["suppliers"])):
            for e in entries:
                m = e["in_manager"]
                reasons = "; ".join(f"{redact(reason)} ({n})" for reason, n in e["reasons"])
                yield (
                    kind,
                    e["batch"],
                    e["label"],
                    e["supplier"],
                    e["batches"] or "",
                    e["loaded"],
                    e["consumed"],
                    e["rejected"],
                    e["held"],
                    m["active"],
                    m["full"],
                    m["expired"],
                    m["error"],
                    m["banned"],
                    m["gone"],
                    m["not_followed"],
                    m["never_checked"],
                    e["median_days_to_ban"],
                    e["survival_7d"],
                    e["survival_7d_of"],
                    e["survival_30d"],
                    e["survival_30d_of"],
                    reasons,
                )

    return _response(header=BATCH_REPORT_HEADER, rows=rows(), filename=filename)
