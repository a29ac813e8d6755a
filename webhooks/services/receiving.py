"""Receiving: low-stock events and refused calls, and waking a run for them (and for staff pushes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from django.db import IntegrityError, transaction
from django.db.models import F, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from poolsite.messages import Stored
from poolsite.text import text_storable
from webhooks import queueing
from webhooks.models import EventStatus, ReplenishmentRun, RunStatus, RunTrigger, WebhookEvent

# A staff push (admin or API): at most this many accounts at once, and what staff read when a run
# was being queued at that very moment.
MAX_PUSH_ACCOUNTS = 1000
MSG_PUSH_BUSY = _("A run is already queued; try again in a moment.")


@dataclass(frozen=True)
class AcceptedEvent:
    """What the webhook answers about an event it accepted (no model instance on the hot path)."""

    pk: int
    status: str
    during_run: bool


# One statement (INSERT … VALUES with subqueries) records the event and reads what the webhook needs to decide: the event's
# during_run is whether a live run (running, lease not run out) is in flight, and the RETURNING
# clause tells whether a run is queued or live-running (then nothing needs waking). Portable to
# SQLite (RETURNING since 3.35) and PostgreSQL; `received_at` is bound like the ORM binds it.
_LIVE_RUNNING = (
    "SELECT 1 FROM webhooks_replenishmentrun WHERE status = %s AND lease_expires_at > %s"
)
_QUEUED = "SELECT 1 FROM webhooks_replenishmentrun WHERE status = %s"
_ACCEPT_SQL = (
    "INSERT INTO webhooks_webhookevent"
    " (received_at, status, key_ok, current_seats, threshold, message, payload, refusal, remote_addr, calls, during_run)"
    f" VALUES (%s, %s, %s, %s, %s, %s, %s, '', %s, 1, EXISTS ({_LIVE_RUNNING}))"
    f" RETURNING id, during_run, EXISTS ({_QUEUED})"
)


def event_receive(
    *, current_seats: int, threshold: int, message: str, payload: str, remote_addr: str | None
) -> AcceptedEvent:
    """Record an accepted low-stock event and wake a run unless one is already under way.

    Every accepted event waits (queued) for a run; one that arrives while a run is in flight
    wakes nothing: that run queues one follow-up run when it finishes, which acts on the newest
    such event and credits the accounts confirmed since it was received. The common case, during
    a burst, is one SQL statement (an INSERT whose subqueries decide during_run and answers whether
    a run is queued or running); only when none is does run_wake add its own.
    """
    now = timezone.now()
    connection = transaction.get_connection()
    stamp = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(
            _ACCEPT_SQL,
            [
                stamp,
                EventStatus.QUEUED.value,
                True,
                current_seats,
                threshold,
                text_storable(message),
                text_storable(payload),
                remote_addr or None,
                RunStatus.RUNNING.value,
                stamp,
                RunStatus.QUEUED.value,
            ],
        )
        pk, during_run, queued = cursor.fetchone()
    if not during_run and not queued:
        run_wake(trigger=RunTrigger.WEBHOOK)
    return AcceptedEvent(pk=pk, status=EventStatus.QUEUED.value, during_run=bool(during_run))


# Refused calls from one address for one reason are recorded at most once in this window.
REFUSAL_FOLD_WINDOW = timedelta(minutes=1)


def event_refuse(
    *, reason: str | Stored, key_ok: bool, payload: str, remote_addr: str | None
) -> WebhookEvent | None:
    """Record a refused call, so staff can see why the pool stopped flowing.

    A call refused for the same reason from the same address as a row recorded less than a minute
    ago is counted in that row (one conditional UPDATE) instead of written: a flood of wrong keys
    leaves a row a minute, not a row a call. Otherwise one INSERT. Returns the new row, or None
    when the call was folded into an existing one. `reason` is a stored message (the view's
    refusal, shown in the reader's language) or text.
    """
    reason, reason_msg = reason if isinstance(reason, tuple) else (reason, None)
    reason = reason[:255]
    recent = WebhookEvent.objects.filter(
        status=EventStatus.REFUSED,
        remote_addr=remote_addr,
        refusal=reason,
        key_ok=key_ok,
        received_at__gte=timezone.now() - REFUSAL_FOLD_WINDOW,
    )
    newest = recent.order_by("-id").values("pk")[:1]
    if WebhookEvent.objects.filter(pk=Subquery(newest)).update(calls=F("calls") + 1):
        return None
    return WebhookEvent.objects.create(
        status=EventStatus.REFUSED,
        key_ok=key_ok,
        refusal=reason,
        refusal_msg=reason_msg,
        payload=text_storable(payload),
        remote_addr=remote_addr,
    )


def run_wake(
    *, trigger: str, requested_accounts: int | None = None, requested_by=None
) -> ReplenishmentRun | None:
    """Queue a run (at most one is ever queued) and its task, on commit.

    When a run is already queued it will do this work: a manual request adds its accounts to it.
    """
    for _attempt in range(3):
        try:
            with transaction.atomic():
                run = ReplenishmentRun.objects.create(
                    trigger=trigger,
                    requested_accounts=requested_accounts,
                    requested_by=requested_by,
                )
        except IntegrityError:
            if not requested_accounts:
                return None
            added = ReplenishmentRun.objects.filter(status=RunStatus.QUEUED).update(
                requested_accounts=Coalesce(F("requested_accounts"), 0) + requested_accounts
            )
            if added:
                return ReplenishmentRun.objects.filter(status=RunStatus.QUEUED).first()
            continue  # it started in between: queue a new one
        transaction.on_commit(
            partial(queueing.task_enqueue, path=queueing.REPLENISH, run_id=run.pk)
        )
        return run
    return None
