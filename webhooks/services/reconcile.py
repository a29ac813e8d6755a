"""Recovering: everything a dead worker can leave behind, put right (`manage.py reconcile`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count
from django.utils.translation import gettext_noop
from django_tasks import TaskResultStatus

from accounts import services as pool
from accounts.selectors import account_next_retry
from poolsite.messages import message_define, message_store
from webhooks import follow_up, queueing
from webhooks.alerting import alerts_evaluate
from webhooks.models import (
    AttemptOutcome,
    EventStatus,
    ImportAttempt,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    Shortfall,
    WebhookEvent,
)
from webhooks.selectors import run_activity
from webhooks.services.decisions import DELIVERED
from webhooks.services.receiving import run_wake

MSG_WORKER_STOPPED = message_define(
    "webhooks.worker_stopped", gettext_noop("The worker stopped before the run finished.")
)


def run_recover_stale(*, now: datetime) -> tuple[int, int]:
    """Abandon runs whose worker died and return their accounts to the pool.

    Called before every run and by `manage.py reconcile`. Returns (runs abandoned, accounts
    recovered). Each recovered account gets an "unknown" attempt row in the same transaction.
    """
    stale = ReplenishmentRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    stale_ids = list(stale.values_list("pk", flat=True))
    stopped, stopped_msg = message_store("webhooks.worker_stopped")
    abandoned = stale.filter(pk__in=stale_ids).update(
        status=RunStatus.ABANDONED, finished_at=now, error=stopped, error_msg=stopped_msg
    )
    expired, expired_msg = message_store("accounts.lease_expired")
    with transaction.atomic():
        recovered = pool.account_recover_expired_leases(now=now)
        runs = dict(
            ReplenishmentRun.objects.filter(
                lease_id__in={lease for _, lease in recovered}
            ).values_list("lease_id", "pk")
        )
        ImportAttempt.objects.bulk_create(
            ImportAttempt(
                account_id=pk,
                run_id=runs.get(lease),
                outcome=AttemptOutcome.UNKNOWN,
                error=expired,
                error_msg=expired_msg,
            )
            for pk, lease in recovered
        )
    if abandoned:
        _run_close_abandoned(run_ids=stale_ids)
    return abandoned, len(recovered)


def _run_close_abandoned(*, run_ids: list[int]) -> None:
    """An abandoned run's counts, and the demand it left unmet: a dead worker's event is not lost silently."""
    for run in ReplenishmentRun.objects.filter(pk__in=run_ids, status=RunStatus.ABANDONED):
        counts = dict(
            ImportAttempt.objects.filter(run=run).values_list("outcome").annotate(n=Count("id"))
        )
        delivered = sum(counts.get(outcome, 0) for outcome in DELIVERED)
        short = max(0, (run.need or 0) - delivered)
        ReplenishmentRun.objects.filter(pk=run.pk, status=RunStatus.ABANDONED).update(
            consumed=counts.get(AttemptOutcome.CONSUMED, 0),
            rejected=counts.get(AttemptOutcome.REJECTED, 0),
            unknown=counts.get(AttemptOutcome.UNKNOWN, 0),
            shortfall=short,
            shortfall_reason=Shortfall.LEASE_LOST if short else "",
        )


# A task row still "running" this long after it started has lost its worker, whatever it was.
STALE_TASK_AFTER = timedelta(minutes=15)


@dataclass
class ReconcileResult:
    runs_abandoned: int
    accounts_recovered: int
    tasks_failed: int
    retry_queued: bool
    queued_run_handed: bool = False
    events_woken: bool = False
    follow_up_queued: bool = False

    @property
    def changed(self) -> bool:
        return bool(
            self.runs_abandoned
            or self.accounts_recovered
            or self.tasks_failed
            or self.retry_queued
            or self.queued_run_handed
            or self.events_woken
            or self.follow_up_queued
        )


def reconcile(*, now: datetime) -> ReconcileResult:
    """Everything a dead worker can leave behind, put right (`manage.py reconcile`)."""
    from django_tasks_db.models import DBTaskResult

    abandoned, recovered = run_recover_stale(now=now)
    # django-tasks-db leaves the task of a killed worker RUNNING forever: fail it, so the task
    # list tells the truth (the run itself was recovered above).
    live_runs = set(
        ReplenishmentRun.objects.filter(
            status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
        ).values_list("pk", flat=True)
    )
    stale = []
    for task_id, task_path, args_kwargs, started_at in DBTaskResult.objects.filter(
        status=TaskResultStatus.RUNNING
    ).values_list("id", "task_path", "args_kwargs", "started_at"):
        run_id = (args_kwargs or {}).get("kwargs", {}).get("run_id")
        if (task_path == queueing.REPLENISH and run_id not in live_runs) or (
            started_at is not None and started_at < now - STALE_TASK_AFTER
        ):
            stale.append(task_id)
    failed = DBTaskResult.objects.filter(pk__in=stale, status=TaskResultStatus.RUNNING).update(
        status=TaskResultStatus.FAILED, finished_at=now
    )
    retry_queued = False
    next_retry = account_next_retry()
    if next_retry is not None and next_retry <= now:
        retry_queued = run_wake(trigger=RunTrigger.RETRY) is not None
    handed, woken = _run_resume(now=now)
    # Following imported Teams: the periodic round when due, and a round whose worker died.
    rounds = follow_up.team_round_resume(now=now)
    if follow_up.team_round_due(now=now):
        rounds = follow_up.team_round_queue() is not None or rounds
    alerts_evaluate(now=now)
    return ReconcileResult(abandoned, recovered, failed, retry_queued, handed, woken, rounds)


def _run_resume(*, now: datetime) -> tuple[bool, bool]:
    """Work that waits for a run no worker will start: give it one. (task handed, run woken)

    With a live run in flight nothing is needed: it supersedes waiting events and hands the
    queued run over when it finishes. Without one, a queued run may have lost its task (a worker
    died between taking the task and claiming the run, or the enqueue after commit failed), and
    events may wait that no run will read (a run died before it read them). A duplicate task is
    harmless: claiming the run is a conditional UPDATE, and the second claim finds nothing.
    """
    from django_tasks_db.models import DBTaskResult

    running, _queued = run_activity(now=now)
    if running is not None:
        return False, False
    queued = (
        ReplenishmentRun.objects.filter(status=RunStatus.QUEUED)
        .values_list("pk", flat=True)
        .first()
    )
    if queued is None:
        if WebhookEvent.objects.filter(status=EventStatus.QUEUED).exists():
            return False, run_wake(trigger=RunTrigger.WEBHOOK) is not None
        return False, False
    waiting = DBTaskResult.objects.filter(
        status=TaskResultStatus.READY,
        task_path=queueing.REPLENISH,
        args_kwargs__kwargs__run_id=queued,
    ).exists()
    if waiting:
        return False, False
    queueing.task_enqueue(path=queueing.REPLENISH, run_id=queued)
    return True, False
