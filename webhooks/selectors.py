"""Reads for replenishment."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Min, Q, Sum
from django.utils import timezone

from accounts.models import Account, AccountStatus
from accounts.selectors import account_consumed_per_day, account_pool_summary
from webhooks.models import (
    AttemptOutcome,
    EventStatus,
    ImportAttempt,
    ReplenishmentPolicy,
    ReplenishmentRun,
    RunStatus,
    WebhookEvent,
)


def policy_get() -> ReplenishmentPolicy:
    return ReplenishmentPolicy.objects.get_or_create(pk=1)[0]


def run_activity(*, now: datetime) -> tuple[int | None, bool]:
    """(id of the live running run or None, whether a run is queued): the webhook's one read.

    A running run whose lease ran out is not live: its worker died, and it must not swallow
    new events.
    """
    running, queued = None, False
    rows = ReplenishmentRun.objects.filter(
        Q(status=RunStatus.QUEUED) | Q(status=RunStatus.RUNNING, lease_expires_at__gt=now)
    ).values_list("pk", "status")
    for pk, status in rows:
        if status == RunStatus.RUNNING:
            running = pk
        else:
            queued = True
    return running, queued


def attempts_landed_since(*, since: datetime) -> int:
    """Imports in the window that added (or may have added) seats: what the hourly cap counts."""
    return ImportAttempt.objects.filter(
        created_at__gte=since, outcome__in=[AttemptOutcome.CONSUMED, AttemptOutcome.UNKNOWN]
    ).count()


def attempts_confirmed_since(*, since: datetime) -> int:
    """Imports the manager confirmed after `since`: seats an event received then does not count yet."""
    return ImportAttempt.objects.filter(created_at__gt=since, outcome=AttemptOutcome.CONSUMED).count()


def account_next_retry() -> datetime | None:
    return Account.objects.filter(
        status=AccountStatus.AVAILABLE, usable=True, unknown_attempts__gt=0
    ).aggregate(at=Min("retry_after"))["at"]


HOUR = timedelta(hours=1)


def consumed_last_week(*, per_day: dict, today) -> int:
    """Accounts consumed in the seven days ending `today`, from account_consumed_per_day().

    `today` must be timezone.localdate(now): the days are grouped in the current time zone.
    """
    return sum(per_day.get(today - timedelta(days=n), 0) for n in range(7))


def dashboard_stats(*, now: datetime) -> dict:
    """Everything the dashboard and GET /api/stats/ show, in bounded, indexed queries.

    JSON-serialisable apart from dates/datetimes (the API and the template format those).
    """
    policy = policy_get()
    summary = account_pool_summary()
    # Days as TruncDate groups them: in the current time zone, not UTC.
    today = timezone.localdate(now)
    per_day = account_consumed_per_day(since=now - timedelta(days=30), until=now)
    days = [today - timedelta(days=n) for n in range(29, -1, -1)]
    consumption = [{"day": day, "consumed": per_day.get(day, 0)} for day in days]
    last_week = consumed_last_week(per_day=per_day, today=today)
    rate = last_week / 7
    runway = round(summary["available_usable"] / rate, 1) if rate else None
    return {
        **summary,
        "seats_in_stock": summary["available_usable"] * policy.seats_per_account,
        "consumption_per_day": consumption,
        "consumed_last_7_days": last_week,
        "runway_days": runway,
    }


def event_refused_calls_since(*, since: datetime) -> int:
    """Webhook calls refused since `since`, counting the calls folded into each refused row."""
    refused = WebhookEvent.objects.filter(status=EventStatus.REFUSED, received_at__gte=since)
    return refused.aggregate(calls=Sum("calls"))["calls"] or 0
