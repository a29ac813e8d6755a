"""Replenishment: receiving low-stock events, running imports, and deciding what each answer means."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts import selectors as pool_selectors
from accounts import services as pool
from accounts.models import Account
from accounts.tokens import redact, usability_problem
from webhooks import alerts
from webhooks.client import (
    FAILURE_BATCH_REFUSED,
    FAILURE_REDIRECT,
    ManagerAnswer,
    ManagerClient,
)
from webhooks.models import (
    AttemptOutcome,
    EventStatus,
    ImportAttempt,
    ImportMode,
    ReplenishmentPolicy,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    WebhookEvent,
)
from webhooks.selectors import HOUR, account_next_retry, attempts_landed_since, policy_get, run_activity

logger = logging.getLogger(__name__)

# Headroom on top of the worst case of the calls a lease covers.
LEASE_MARGIN = timedelta(seconds=60)
MSG_UNUSABLE_AT_PICK = "Not sent: %s"
MSG_ALREADY_IN_MANAGER = "Already in the manager before this pool sent it: %s"
MSG_CONFIG_ERROR = "The manager refused the request (HTTP %s): check MANAGER_BASE_URL and MANAGER_API_KEY. %s"
MSG_LEASE_LOST = "This run's lease on the account had expired when the answer came; recorded, not applied."
# A staff push (admin or API): at most this many accounts at once, and what staff read when a run
# was being queued at that very moment.
MAX_PUSH_ACCOUNTS = 1000
MSG_PUSH_BUSY = _("A run is already queued; try again in a moment.")


# --- Receiving ------------------------------------------------------------------------------


def event_receive(
    *, current_seats: int, threshold: int, message: str, payload: str, remote_addr: str | None
) -> WebhookEvent:
    """Record an accepted low-stock event and wake a run unless one is already under way.

    One read decides: an event that arrives while a run is in flight is superseded by it (the
    manager sends a fresh event after the next redemption, so nothing is lost); otherwise the
    event waits for the queued run, which is created here if there is none. The common case,
    during a burst, is one INSERT.
    """
    running, queued = run_activity(now=timezone.now())
    event = WebhookEvent.objects.create(
        status=EventStatus.SUPERSEDED if running else EventStatus.QUEUED,
        run_id=running,
        key_ok=True,
        current_seats=current_seats,
        threshold=threshold,
        message=_storable(message),
        payload=_storable(payload),
        remote_addr=remote_addr,
    )
    if not running and not queued:
        run_wake(trigger=RunTrigger.WEBHOOK)
    return event


def _storable(text: str) -> str:
    """Outside text as it may be kept: nothing token-shaped, and no NUL (PostgreSQL text refuses it)."""
    return redact(text).replace("\x00", "\ufffd")


# Refused calls from one address for one reason are recorded at most once in this window.
REFUSAL_FOLD_WINDOW = timedelta(minutes=1)


def event_refuse(*, reason: str, key_ok: bool, payload: str, remote_addr: str | None) -> WebhookEvent | None:
    """Record a refused call, so staff can see why the pool stopped flowing.

    A call refused for the same reason from the same address as a row recorded less than a minute
    ago is counted in that row (one conditional UPDATE) instead of written: a flood of wrong keys
    leaves a row a minute, not a row a call. Otherwise one INSERT. Returns the new row, or None
    when the call was folded into an existing one.
    """
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
        status=EventStatus.REFUSED, key_ok=key_ok, refusal=reason, payload=_storable(payload), remote_addr=remote_addr
    )


def run_wake(*, trigger: str, requested_accounts: int | None = None, requested_by=None) -> ReplenishmentRun | None:
    """Queue a run (at most one is ever queued) and its task, on commit.

    When a run is already queued it will do this work: a manual request adds its accounts to it.
    """
    from webhooks.tasks import replenish

    for _ in range(3):
        try:
            with transaction.atomic():
                run = ReplenishmentRun.objects.create(
                    trigger=trigger, requested_accounts=requested_accounts, requested_by=requested_by
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
        transaction.on_commit(partial(replenish.enqueue, run_id=run.pk))
        return run
    return None


# --- Deciding -------------------------------------------------------------------------------


def replenishment_need(
    *, threshold: int, current_seats: int, policy: ReplenishmentPolicy, landed_last_hour: int
) -> tuple[int, str]:
    """How many accounts an event asks for, and the arithmetic, for the run's record."""
    shortfall = threshold + policy.margin_seats - current_seats
    wanted = max(1, math.ceil(shortfall / policy.seats_per_account))
    room = max(0, policy.max_accounts_per_hour - landed_last_hour)
    need = min(wanted, policy.max_accounts_per_event, room)
    explained = (
        f"ceil(({threshold} + {policy.margin_seats} - {current_seats}) / {policy.seats_per_account}) = "
        f"{math.ceil(shortfall / policy.seats_per_account)}, at least 1 → {wanted}; "
        f"cap per event {policy.max_accounts_per_event}; "
        f"hourly cap {policy.max_accounts_per_hour} with {landed_last_hour} in the last hour → {need}"
    )
    return need, explained


def attempt_outcome(*, answer: ManagerAnswer, had_unknown: bool) -> AttemptOutcome:
    """What one answer of the manager means for the account sent. The only place this is decided.

    - confirmed import → consumed;
    - "already present" → consumed if an earlier attempt's outcome was unknown (that one
      landed), else rejected (it was in the manager before we sent it);
    - any other refusal → rejected;
    - wrong key, wrong URL, a redirect, a refused batch, a request shape the manager does not
      take → configuration error (the account is not at fault and goes back);
    - 5xx, timeouts, dropped connections, unreadable or cut answers → unknown: it may have landed.
    """
    status = answer.http_status
    if answer.failure in (FAILURE_REDIRECT, FAILURE_BATCH_REFUSED):
        return AttemptOutcome.CONFIG_ERROR
    if answer.failure or status is None:
        return AttemptOutcome.UNKNOWN
    if status in (401, 403, 404, 405, 422) or 300 <= status < 400:
        return AttemptOutcome.CONFIG_ERROR
    if status == 200 and answer.success is True:
        return AttemptOutcome.CONSUMED
    if status in (200, 400) and answer.success is False:
        if answer.already_present:
            return AttemptOutcome.CONSUMED if had_unknown else AttemptOutcome.REJECTED
        return AttemptOutcome.REJECTED
    return AttemptOutcome.UNKNOWN


# --- Running --------------------------------------------------------------------------------


@dataclass
class _Lease:
    id: uuid.UUID
    until: datetime


def run_execute(*, run_id: int, client: ManagerClient | None = None) -> ReplenishmentRun | None:
    """Carry out a queued run: the worker's task. Safe to call twice, and from two workers at once.

    Claiming the run is a conditional UPDATE from queued to running that the database allows for
    one run at a time; a second caller finds nothing to claim and returns.
    """
    now = timezone.now()
    run_recover_stale(now=now)
    try:
        with transaction.atomic():
            claimed = ReplenishmentRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
                status=RunStatus.RUNNING, started_at=now, lease_expires_at=now + LEASE_MARGIN
            )
    except IntegrityError:
        claimed = 0  # another run is in flight; it hands this one to a worker when it finishes
    if claimed != 1:
        return None
    run = ReplenishmentRun.objects.get(pk=run_id)
    client = client or ManagerClient.from_settings()
    work = _RunWork(run=run, client=client, policy=policy_get())
    try:
        status, error = work.run()
    except Exception as exc:
        logger.exception("Replenishment run %s failed", run.pk)
        work.release_unsent()
        _run_finish(run=run, status=RunStatus.FAILED, error=redact(repr(exc)))
        raise
    finally:
        client.close()
    _run_finish(run=run, status=status, error=error)
    if status == RunStatus.CONFIG_ERROR:
        logger.error("Replenishment stopped on a configuration error: %s", error)
    run.refresh_from_db()
    return run


class _RunWork:
    def __init__(self, *, run: ReplenishmentRun, client: ManagerClient, policy: ReplenishmentPolicy):
        self.run_obj = run
        self.client = client
        self.policy = policy
        self.unsent: list[tuple[Account, _Lease]] = []
        self.per_call = timedelta(seconds=settings.MANAGER_CONNECT_TIMEOUT + settings.MANAGER_READ_TIMEOUT)

    def run(self) -> tuple[str, str]:
        run = self.run_obj
        now = timezone.now()
        need, explained = self._need(now)
        ReplenishmentRun.objects.filter(pk=run.pk).update(need=need, need_explained=explained[:255])
        # Accounts whose earlier outcome is unknown go first: they may already be in the manager.
        for unresolved in (True, False):
            wanted = self.policy.max_accounts_per_event if unresolved else need
            while wanted > 0:
                batch = self._reserve(wanted, unresolved=unresolved)
                if not batch:
                    break
                sendable = [(a, lease) for a, lease in batch if self._sendable(a, lease)]
                if not unresolved:
                    wanted -= len(sendable)
                else:
                    wanted = 0
                self.unsent.extend(sendable)
                stop = self._import_unsent()
                if stop:
                    return RunStatus.CONFIG_ERROR, stop
        return RunStatus.FINISHED, ""

    def _need(self, now: datetime) -> tuple[int, str]:
        run = self.run_obj
        pending = list(WebhookEvent.objects.filter(status=EventStatus.QUEUED).order_by("-id").values_list("pk", flat=True))
        need, parts = 0, []
        if pending:
            # The newest event is the manager's latest count; the older ones are stale.
            with transaction.atomic():
                WebhookEvent.objects.filter(pk=pending[0], status=EventStatus.QUEUED).update(
                    status=EventStatus.ACTED_ON, run=run
                )
                WebhookEvent.objects.filter(pk__in=pending[1:], status=EventStatus.QUEUED).update(
                    status=EventStatus.SUPERSEDED, run=run
                )
            event = WebhookEvent.objects.get(pk=pending[0])
            need, explained = replenishment_need(
                threshold=event.threshold,
                current_seats=event.current_seats,
                policy=self.policy,
                landed_last_hour=attempts_landed_since(since=now - HOUR),
            )
            parts.append(f"event #{event.pk}: {explained}")
        if run.requested_accounts:
            need += run.requested_accounts
            parts.append(f"manual push of {run.requested_accounts} (not capped)")
        return need, "; ".join(parts) or "no event pending: re-sending unknown outcomes only"

    def _reserve(self, count: int, *, unresolved: bool) -> list[tuple[Account, _Lease]]:
        """Reserve accounts for the worst case of sending them all, and extend the run's lease to match."""
        now = timezone.now()
        lease = _Lease(self.run_obj.lease_id, now + self.per_call * count + LEASE_MARGIN)
        extended = ReplenishmentRun.objects.filter(
            pk=self.run_obj.pk, status=RunStatus.RUNNING, lease_expires_at__gt=now
        ).update(lease_expires_at=lease.until)
        if not extended:
            return []  # the run's lease ran out (its worker was frozen) and it was abandoned: stop
        accounts = pool.account_reserve_batch(
            count=count, lease_id=lease.id, lease_until=lease.until, now=now, unresolved=unresolved
        )
        if accounts:
            ReplenishmentRun.objects.filter(pk=self.run_obj.pk).update(reserved=F("reserved") + len(accounts))
        return [(account, lease) for account in accounts]

    def _sendable(self, account: Account, lease: _Lease) -> bool:
        """Re-check usability at the moment of sending: time has passed since the load."""
        now = timezone.now()
        problem = usability_problem(
            at_expires_at=account.at_expires_at,
            has_session_token=bool(account.session_token),
            has_refresh_token=bool(account.refresh_token),
            has_client_id=bool(account.client_id),
            now=now,
            min_at_lifetime=timedelta(hours=settings.POOL_MIN_AT_LIFETIME_HOURS),
        )
        if problem is None:
            return True
        error = MSG_UNUSABLE_AT_PICK % problem.code
        with transaction.atomic():
            settled = pool.account_settle_rejected(account_id=account.pk, lease_id=lease.id, now=now, error=error, sent=False)
            ImportAttempt.objects.create(
                account=account, run=self.run_obj, sent=False, outcome=AttemptOutcome.REJECTED,
                error=error if settled else f"{error} {MSG_LEASE_LOST}",
            )  # fmt: skip
        return False

    def _import_unsent(self) -> str:
        """Send every reserved account; the configuration error that stopped it, or ""."""
        batchable = []
        if self.policy.import_mode == ImportMode.BATCH and self._drop_lost_leases():
            batchable = [(a, lease) for a, lease in self.unsent if a.email]
        if len(batchable) > 1:
            answers = self.client.import_batch([a for a, _ in batchable])
            stop = ""
            for account, lease in batchable:
                self.unsent.remove((account, lease))
                outcome = self._record(account, lease, answers[account.pk], ImportMode.BATCH)
                if outcome == AttemptOutcome.CONFIG_ERROR:
                    stop = stop or answers[account.pk].text
            if stop:
                return self._stop(stop, answers[batchable[0][0].pk])
        while self.unsent:
            if not self._drop_lost_leases():
                break
            account, lease = self.unsent[0]
            answer = self.client.import_single(account)
            self.unsent.pop(0)
            if self._record(account, lease, answer, ImportMode.SINGLE) == AttemptOutcome.CONFIG_ERROR:
                return self._stop(answer.text, answer)
        return ""

    def _drop_lost_leases(self) -> bool:
        """Forget reserved accounts whose lease is gone; whether any are left to send.

        Reconcile recovered them (and wrote their attempt rows) while this worker was frozen,
        and another run may have imported them since: they are no longer this run's to send.
        """
        if not self.unsent:
            return False
        held = pool_selectors.account_ids_leased(
            account_ids=[a.pk for a, _ in self.unsent], lease_id=self.run_obj.lease_id, now=timezone.now()
        )
        self.unsent = [(a, lease) for a, lease in self.unsent if a.pk in held]
        return bool(self.unsent)

    def _stop(self, text: str, answer: ManagerAnswer) -> str:
        self.release_unsent()
        return MSG_CONFIG_ERROR % (answer.http_status or answer.failure, text)

    def release_unsent(self) -> None:
        now = timezone.now()
        for account, lease in self.unsent:
            if pool.account_release(account_id=account.pk, lease_id=lease.id, now=now):
                ReplenishmentRun.objects.filter(pk=self.run_obj.pk).update(returned=F("returned") + 1)
        self.unsent.clear()

    def _record(self, account: Account, lease: _Lease, answer: ManagerAnswer, mode: str) -> AttemptOutcome:
        """Settle the account and write its attempt row, in one transaction."""
        now = timezone.now()
        outcome = attempt_outcome(answer=answer, had_unknown=account.unknown_attempts > 0)
        common = {"account_id": account.pk, "lease_id": lease.id, "now": now}
        if outcome == AttemptOutcome.CONSUMED:
            settle = partial(pool.account_settle_consumed, **common)
        elif outcome == AttemptOutcome.REJECTED:
            reason = MSG_ALREADY_IN_MANAGER % answer.text if answer.already_present else answer.text
            settle = partial(pool.account_settle_rejected, **common, error=reason)
        elif outcome == AttemptOutcome.UNKNOWN:
            backoff = self.policy.backoff_seconds
            n = account.unknown_attempts
            retry_after = now + timedelta(seconds=backoff[n]) if n < len(backoff) else None
            settle = partial(pool.account_settle_unknown, **common, error=answer.text or answer.failure, retry_after=retry_after)
        else:
            settle = partial(pool.account_release, **common)
        with transaction.atomic():
            settled = settle()
            ImportAttempt.objects.create(
                account=account,
                run=self.run_obj,
                mode=mode,
                http_status=answer.http_status,
                manager_message=answer.text,
                error=(answer.failure if settled else f"{answer.failure} {MSG_LEASE_LOST}").strip(),
                duration_ms=answer.duration_ms,
                outcome=outcome,
            )
        return outcome


def _run_finish(*, run: ReplenishmentRun, status: str, error: str) -> None:
    """Close the run with its counts; hand over to what comes next, on commit."""
    from webhooks.tasks import replenish, retry_unknown

    now = timezone.now()
    counts = dict(ImportAttempt.objects.filter(run=run).values_list("outcome").annotate(n=Count("id")))
    with transaction.atomic():
        ReplenishmentRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=status,
            finished_at=now,
            consumed=counts.get(AttemptOutcome.CONSUMED, 0),
            rejected=counts.get(AttemptOutcome.REJECTED, 0),
            unknown=counts.get(AttemptOutcome.UNKNOWN, 0),
            error=error,
        )
        # Events that came in while this run was in flight are superseded by it.
        WebhookEvent.objects.filter(status=EventStatus.QUEUED, received_at__lte=now).update(
            status=EventStatus.SUPERSEDED, run=run
        )
        queued = ReplenishmentRun.objects.filter(status=RunStatus.QUEUED).values_list("pk", flat=True).first()
        if queued:
            transaction.on_commit(partial(replenish.enqueue, run_id=queued))
        next_retry = account_next_retry()
        if next_retry is not None:
            transaction.on_commit(partial(retry_unknown.using(run_after=max(next_retry, now)).enqueue))
        # Alerts read what this run left behind (its status, its attempts, the pool), so after commit.
        transaction.on_commit(lambda: alerts.alert_evaluate(now=timezone.now()))


# --- Recovering -----------------------------------------------------------------------------


def run_recover_stale(*, now: datetime) -> tuple[int, int]:
    """Abandon runs whose worker died and return their accounts to the pool.

    Called before every run and by `manage.py reconcile`. Returns (runs abandoned, accounts
    recovered). Each recovered account gets an "unknown" attempt row in the same transaction.
    """
    abandoned = ReplenishmentRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now).update(
        status=RunStatus.ABANDONED, finished_at=now, error="The worker stopped before the run finished."
    )
    with transaction.atomic():
        recovered = pool.account_recover_expired_leases(now=now)
        runs = dict(
            ReplenishmentRun.objects.filter(lease_id__in={lease for _, lease in recovered}).values_list("lease_id", "pk")
        )
        ImportAttempt.objects.bulk_create(
            ImportAttempt(account_id=pk, run_id=runs.get(lease), outcome=AttemptOutcome.UNKNOWN, error=pool.MSG_LEASE_EXPIRED)
            for pk, lease in recovered
        )
    return abandoned, len(recovered)


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

    @property
    def changed(self) -> bool:
        return bool(
            self.runs_abandoned
            or self.accounts_recovered
            or self.tasks_failed
            or self.retry_queued
            or self.queued_run_handed
            or self.events_woken
        )


def reconcile(*, now: datetime) -> ReconcileResult:
    """Everything a dead worker can leave behind, put right (`manage.py reconcile`)."""
    from django_tasks_db.models import DBTaskResult

    from webhooks.tasks import replenish

    abandoned, recovered = run_recover_stale(now=now)
    # django-tasks-db leaves the task of a killed worker RUNNING forever: fail it, so the task
    # list tells the truth (the run itself was recovered above).
    live_runs = set(
        ReplenishmentRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).values_list("pk", flat=True)
    )
    stale = []
    for task_id, task_path, args_kwargs, started_at in DBTaskResult.objects.filter(status="RUNNING").values_list(
        "id", "task_path", "args_kwargs", "started_at"
    ):
        run_id = (args_kwargs or {}).get("kwargs", {}).get("run_id")
        if (task_path == replenish.module_path and run_id not in live_runs) or (
            started_at is not None and started_at < now - STALE_TASK_AFTER
        ):
            stale.append(task_id)
    failed = DBTaskResult.objects.filter(pk__in=stale, status="RUNNING").update(status="FAILED", finished_at=now)
    retry_queued = False
    next_retry = account_next_retry()
    if next_retry is not None and next_retry <= now:
        retry_queued = run_wake(trigger=RunTrigger.RETRY) is not None
    handed, woken = _run_resume(now=now)
    alerts.alert_evaluate(now=now)
    return ReconcileResult(abandoned, recovered, failed, retry_queued, handed, woken)


def _run_resume(*, now: datetime) -> tuple[bool, bool]:
    """Work that waits for a run no worker will start: give it one. (task handed, run woken)

    With a live run in flight nothing is needed: it supersedes waiting events and hands the
    queued run over when it finishes. Without one, a queued run may have lost its task (a worker
    died between taking the task and claiming the run, or the enqueue after commit failed), and
    events may wait that no run will read (a run died before it read them). A duplicate task is
    harmless: claiming the run is a conditional UPDATE, and the second claim finds nothing.
    """
    from django_tasks_db.models import DBTaskResult

    from webhooks.tasks import replenish

    running, _queued = run_activity(now=now)
    if running is not None:
        return False, False
    queued = ReplenishmentRun.objects.filter(status=RunStatus.QUEUED).values_list("pk", flat=True).first()
    if queued is None:
        if WebhookEvent.objects.filter(status=EventStatus.QUEUED).exists():
            return False, run_wake(trigger=RunTrigger.WEBHOOK) is not None
        return False, False
    waiting = DBTaskResult.objects.filter(
        status="READY", task_path=replenish.module_path, args_kwargs__kwargs__run_id=queued
    ).exists()
    if waiting:
        return False, False
    replenish.enqueue(run_id=queued)
    return True, False
