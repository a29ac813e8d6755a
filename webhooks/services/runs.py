"""Running: a queued run carried out, from claiming it to closing it with its unmet demand."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F
from django.utils import timezone
from django.utils.translation import gettext_noop

from accounts import services as pool
from accounts.models import Account
from accounts.selectors import account_next_retry
from poolsite.messages import Stored, message_define, message_store, message_verbatim
from poolsite.text import redact
from webhooks import queueing
from webhooks.alerting import alerts_evaluate
from webhooks.client import ManagerClient
from webhooks.models import (
    AttemptOutcome,
    EventStatus,
    ImportAttempt,
    ReplenishmentPolicy,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    Shortfall,
    WebhookEvent,
)
from webhooks.selectors import (
    HOUR,
    attempts_confirmed_since,
    attempts_landed_since,
    policy_get,
)
from webhooks.services.decisions import DELIVERED, Need, replenishment_need
from webhooks.services.receiving import run_wake
from webhooks.services.reconcile import run_recover_stale
from webhooks.services.sending import ChunkSender, Lease

logger = logging.getLogger(__name__)


# Accounts reserved under one lease (settings.REPLENISH_LEASE_CHUNK, 10 by default). A lease
# covers the worst case of the calls it holds (connect + read timeout each) plus a margin, so a
# worker killed mid-run holds its accounts, and every event behind them, for one chunk's worst
# case: 10 × (5 + 30) s + 60 s ≈ 7 min with the defaults, where one lease over a push of 1,000
# was 9 h 44 min.
def lease_chunk() -> int:
    return max(1, settings.REPLENISH_LEASE_CHUNK)


def lease_margin() -> timedelta:
    """Headroom on top of the worst case of the calls a lease covers."""
    return timedelta(seconds=settings.REPLENISH_LEASE_MARGIN_SECONDS)


# A run's record (poolsite.messages): written in English, shown in the reader's language.
message_define("need.no_event", gettext_noop("no event pending: re-sending unknown outcomes only"))
message_define("need.for_event", gettext_noop("event #%(event)s: %(need)s"))
message_define(
    "need.manual_push", gettext_noop("%(need)s; manual push of %(accounts)s (not capped)")
)


class _LeaseLost(Exception):
    """The run's lease ran out (its worker was frozen) and reconcile abandoned it: stop."""


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
                status=RunStatus.RUNNING, started_at=now, lease_expires_at=now + lease_margin()
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
        work.abort(error=redact(repr(exc)))
        work.short(Shortfall.FAILED)
        error = message_verbatim(repr(exc))
        _run_finish(run=run, status=RunStatus.FAILED, error=error, work=work)
        raise
    finally:
        client.close()
    _run_finish(run=run, status=status, error=error, work=work)
    if status == RunStatus.CONFIG_ERROR:
        logger.error("Replenishment stopped on a configuration error: %s", error[0])
    run.refresh_from_db()
    return run


class _RunWork:
    """One run's work: reserve in chunks, send, settle each answer, and account for the demand."""

    def __init__(
        self, *, run: ReplenishmentRun, client: ManagerClient, policy: ReplenishmentPolicy
    ):
        self.run_obj = run
        self.policy = policy
        self.sender = ChunkSender(run=run, client=client, policy=policy)
        self.per_call = timedelta(
            seconds=settings.MANAGER_CONNECT_TIMEOUT + settings.MANAGER_READ_TIMEOUT
        )
        self.wanted = 0
        self.delivered = 0
        self.shortfall_reason = ""

    @property
    def strays(self) -> list[str]:
        """Lines of a batch answer that named no account sent (kept on the run)."""
        return self.sender.strays

    def abort(self, *, error: str) -> None:
        """The run failed: what was sent goes back as unknown, what was not, unsent."""
        self.sender.abort(error=error)

    def short(self, reason: str) -> None:
        """Record why the run delivered less than wanted (the first reason stands)."""
        self.shortfall_reason = self.shortfall_reason or reason

    def run(self) -> tuple[str, Stored | None]:
        run = self.run_obj
        # The events it takes and the need it records commit together, and only while the run
        # still holds its lease: a worker frozen past it must not take events from the run that
        # follows, and a run that dies after this has a need, so reconcile records what it left
        # unmet (_run_close_abandoned).
        now = timezone.now()
        with transaction.atomic():
            held = ReplenishmentRun.objects.filter(
                pk=run.pk, status=RunStatus.RUNNING, lease_expires_at__gt=now
            ).update(lease_expires_at=now + lease_margin())
            if not held:
                return RunStatus.ABANDONED, None
            need = self._need(now)
            self.wanted = need.wanted + (run.requested_accounts or 0)
            target = need.accounts + (run.requested_accounts or 0)
            ReplenishmentRun.objects.filter(pk=run.pk).update(
                need=target,
                need_explained=need.explained[:255],
                need_explained_msg=need.explained_msg,
            )
        try:
            # Accounts whose earlier outcome is unknown go first: they may already be in the
            # manager. Their seats were counted when they were first sent, so they meet no demand.
            budget = self.policy.max_accounts_per_event
            while budget > 0:
                chunk = self._reserve(min(budget, lease_chunk()), unresolved=True)
                if not chunk:
                    break
                budget -= len(chunk)
                outcomes, stop = self.sender.send(chunk)
                if stop:
                    self.short(Shortfall.CONFIG_ERROR)
                    return RunStatus.CONFIG_ERROR, stop
            # Fresh accounts until the demand is met: one the manager rejects is replaced (it
            # added no seats), up to one event's cap of rejections per run.
            rejections_left = self.policy.max_accounts_per_event
            while self.delivered < target:
                if rejections_left <= 0:
                    self.short(Shortfall.REJECTIONS)
                    break
                count = min(target - self.delivered, lease_chunk(), rejections_left)
                chunk = self._reserve(count, unresolved=False)
                if not chunk:
                    self.short(Shortfall.POOL_EMPTY)
                    break
                outcomes, stop = self.sender.send(chunk)
                self.delivered += sum(outcome in DELIVERED for outcome in outcomes)
                rejections_left -= sum(outcome == AttemptOutcome.REJECTED for outcome in outcomes)
                if stop:
                    self.short(Shortfall.CONFIG_ERROR)
                    return RunStatus.CONFIG_ERROR, stop
        except _LeaseLost:
            self.short(Shortfall.LEASE_LOST)
        if need.capped_by:
            self.short(need.capped_by)
        return RunStatus.FINISHED, None

    def _need(self, now: datetime) -> Need:
        run = self.run_obj
        pending = list(
            WebhookEvent.objects.filter(status=EventStatus.QUEUED)
            .order_by("-id")
            .values_list("pk", flat=True)
        )
        if not pending:
            explained = message_store("need.no_event")
            need = Need(
                accounts=0,
                wanted=0,
                capped_by="",
                explained=explained[0],
                explained_msg=explained[1],
            )
        else:
            # The newest event is the manager's latest count; the older ones are stale.
            with transaction.atomic():
                WebhookEvent.objects.filter(pk=pending[0], status=EventStatus.QUEUED).update(
                    status=EventStatus.ACTED_ON, run=run
                )
                WebhookEvent.objects.filter(pk__in=pending[1:], status=EventStatus.QUEUED).update(
                    status=EventStatus.SUPERSEDED, run=run
                )
            event = WebhookEvent.objects.get(pk=pending[0])
            need = replenishment_need(
                threshold=event.threshold,
                current_seats=event.current_seats,
                policy=self.policy,
                landed_last_hour=attempts_landed_since(since=now - HOUR),
                confirmed_since=attempts_confirmed_since(since=event.received_at),
                at_least_one=not event.during_run,
            )
            explained = message_store(
                "need.for_event", event=event.pk, need=(need.explained, need.explained_msg)
            )
            need = Need(need.accounts, need.wanted, need.capped_by, *explained)
        if run.requested_accounts:
            explained = message_store(
                "need.manual_push",
                need=(need.explained, need.explained_msg),
                accounts=run.requested_accounts,
            )
            need = Need(need.accounts, need.wanted, need.capped_by, *explained)
        return need

    def _reserve(self, count: int, *, unresolved: bool) -> list[tuple[Account, Lease]]:
        """Reserve one chunk for the worst case of sending it, and extend the run's lease to match."""
        now = timezone.now()
        lease = Lease(self.run_obj.lease_id, now + self.per_call * count + lease_margin())
        extended = ReplenishmentRun.objects.filter(
            pk=self.run_obj.pk, status=RunStatus.RUNNING, lease_expires_at__gt=now
        ).update(lease_expires_at=lease.until)
        if not extended:
            raise _LeaseLost
        accounts = pool.account_reserve_batch(
            count=count, lease_id=lease.id, lease_until=lease.until, now=now, unresolved=unresolved
        )
        if accounts:
            ReplenishmentRun.objects.filter(pk=self.run_obj.pk).update(
                reserved=F("reserved") + len(accounts)
            )
        return [(account, lease) for account in accounts]


def _run_finish(
    *, run: ReplenishmentRun, status: str, error: Stored | None, work: _RunWork
) -> None:
    """Close the run with its counts and its unmet demand; hand over to what comes next, on commit."""
    now = timezone.now()
    counts = dict(
        ImportAttempt.objects.filter(run=run).values_list("outcome").annotate(n=Count("id"))
    )
    shortfall = max(0, work.wanted - work.delivered)
    with transaction.atomic():
        ReplenishmentRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=status,
            finished_at=now,
            consumed=counts.get(AttemptOutcome.CONSUMED, 0),
            rejected=counts.get(AttemptOutcome.REJECTED, 0),
            unknown=counts.get(AttemptOutcome.UNKNOWN, 0),
            shortfall=shortfall,
            shortfall_reason=(work.shortfall_reason or Shortfall.POOL_EMPTY) if shortfall else "",
            stray_answers=work.strays,
            error=error[0] if error else "",
            error_msg=error[1] if error else None,
        )
        # Events that came in while this run was in flight wait for one follow-up run, which
        # acts on the newest of them (docs/RELIABILITY.md, "Demand is never dropped").
        follow_up = None
        if WebhookEvent.objects.filter(status=EventStatus.QUEUED).exists():
            follow_up = run_wake(trigger=RunTrigger.FOLLOW_UP)
        if follow_up is None:
            queued = (
                ReplenishmentRun.objects.filter(status=RunStatus.QUEUED)
                .values_list("pk", flat=True)
                .first()
            )
            if queued:
                transaction.on_commit(
                    partial(queueing.task_enqueue, path=queueing.REPLENISH, run_id=queued)
                )
        next_retry = account_next_retry()
        if next_retry is not None:
            transaction.on_commit(
                partial(
                    queueing.task_enqueue,
                    path=queueing.RETRY_UNKNOWN,
                    run_after=max(next_retry, now),
                )
            )
        # Alerts read what this run left behind (its status, its attempts, the pool), so after commit.
        transaction.on_commit(lambda: alerts_evaluate(now=timezone.now()))
