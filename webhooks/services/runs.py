"""Replenishment: receiving low-stock events, running imports, and deciding what each answer means."""

from __future__ import annotations

import logging
import math
import uuid
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
from webhooks import alerts, follow_up
from webhooks.client import (
    FAILURE_BAD_KEY,
    FAILURE_BATCH_REFUSED,
    FAILURE_REDIRECT,
    FAILURE_UNRECORDED,
    ManagerAnswer,
    ManagerClient,
    batch_safe,
)
from webhooks.models import (
    AttemptOutcome,
    EventStatus,
    FollowedTeam,
    ImportAttempt,
    ImportMode,
    ReplenishmentPolicy,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    Shortfall,
    WebhookEvent,
)
from webhooks.selectors import (
    HOUR,
    account_next_retry,
    attempts_confirmed_since,
    attempts_landed_since,
    policy_get,
    run_activity,
)

logger = logging.getLogger(__name__)

MSG_UNUSABLE_AT_PICK = "Not sent: %s"
MSG_ALREADY_IN_MANAGER = "Already in the manager before this pool sent it: %s"
MSG_CONFIG_ERROR = (
    "The manager refused the request (HTTP %s): check MANAGER_BASE_URL and MANAGER_API_KEY. %s"
)
MSG_LEASE_LOST = (
    "This run's lease on the account had expired when the answer came; recorded, not applied."
)
MSG_ANSWER_UNRECORDED = (
    "Sent, but the run failed before it recorded the answer (%s): outcome unknown."
)
# A staff push (admin or API): at most this many accounts at once, and what staff read when a run
# was being queued at that very moment.
MAX_PUSH_ACCOUNTS = 1000
MSG_PUSH_BUSY = _("A run is already queued; try again in a moment.")


# --- Receiving ------------------------------------------------------------------------------


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
                _storable(message),
                _storable(payload),
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


def _storable(text: str) -> str:
    """Outside text as it may be kept: nothing token-shaped, and no NUL (PostgreSQL text refuses it)."""
    return redact(text).replace("\x00", "\ufffd")


# Refused calls from one address for one reason are recorded at most once in this window.
REFUSAL_FOLD_WINDOW = timedelta(minutes=1)


def event_refuse(
    *, reason: str, key_ok: bool, payload: str, remote_addr: str | None
) -> WebhookEvent | None:
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
        status=EventStatus.REFUSED,
        key_ok=key_ok,
        refusal=reason,
        payload=_storable(payload),
        remote_addr=remote_addr,
    )


def run_wake(
    *, trigger: str, requested_accounts: int | None = None, requested_by=None
) -> ReplenishmentRun | None:
    """Queue a run (at most one is ever queued) and its task, on commit.

    When a run is already queued it will do this work: a manual request adds its accounts to it.
    """
    from webhooks.tasks import replenish

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
        transaction.on_commit(partial(replenish.enqueue, run_id=run.pk))
        return run
    return None


# --- Deciding -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    accounts: int  # what the run sends: wanted, within the caps
    wanted: int  # what the event asks for before the caps
    capped_by: str  # a Shortfall code when the caps cut `wanted`, else ""
    explained: str  # the arithmetic, for the run's record


def replenishment_need(
    *,
    threshold: int,
    current_seats: int,
    policy: ReplenishmentPolicy,
    landed_last_hour: int,
    confirmed_since: int = 0,
    at_least_one: bool = True,
) -> Need:
    """How many accounts an event asks for, within the caps, and the arithmetic.

    `confirmed_since` counts accounts the manager confirmed after the event was received: their
    seats are not in its `current_seats` yet. An event received during a run is acted on by a
    follow-up run with `at_least_one=False`, so an event those imports already satisfied sends
    nothing.
    """
    seats = current_seats + policy.seats_per_account * confirmed_since
    raw = math.ceil((threshold + policy.margin_seats - seats) / policy.seats_per_account)
    wanted = max(1, raw) if at_least_one else max(0, raw)
    room = max(0, policy.max_accounts_per_hour - landed_last_hour)
    accounts = min(wanted, policy.max_accounts_per_event, room)
    capped_by = ""
    if accounts < wanted:
        capped_by = (
            Shortfall.HOURLY_CAP if room < policy.max_accounts_per_event else Shortfall.EVENT_CAP
        )
    counted = (
        f"({current_seats} + {policy.seats_per_account} × {confirmed_since} confirmed since)"
        if confirmed_since
        else current_seats
    )
    explained = (
        f"ceil(({threshold} + {policy.margin_seats} - {counted}) / {policy.seats_per_account}) = {raw}"
        + (", at least 1" if at_least_one else "")
        + f" → {wanted}; cap per event {policy.max_accounts_per_event}; "
        f"hourly cap {policy.max_accounts_per_hour} with {landed_last_hour} in the last hour → {accounts}"
        + ("; already satisfied" if wanted == 0 else "")
    )
    return Need(accounts=accounts, wanted=wanted, capped_by=capped_by, explained=explained)


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
    if answer.failure in (FAILURE_REDIRECT, FAILURE_BATCH_REFUSED, FAILURE_BAD_KEY):
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


@dataclass
class _Lease:
    id: uuid.UUID
    until: datetime


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
        _run_finish(run=run, status=RunStatus.FAILED, error=redact(repr(exc)), work=work)
        raise
    finally:
        client.close()
    _run_finish(run=run, status=status, error=error, work=work)
    if status == RunStatus.CONFIG_ERROR:
        logger.error("Replenishment stopped on a configuration error: %s", error)
    run.refresh_from_db()
    return run


# Outcomes after which the account's seats are (or may be) in the manager: they meet demand.
_DELIVERED = (AttemptOutcome.CONSUMED, AttemptOutcome.UNKNOWN)


class _RunWork:
    """One run's work: reserve in chunks, send, settle each answer, and account for the demand."""

    def __init__(
        self, *, run: ReplenishmentRun, client: ManagerClient, policy: ReplenishmentPolicy
    ):
        self.run_obj = run
        self.client = client
        self.policy = policy
        # Reserved and not yet sent: released unsent if the run stops.
        self.unsent: list[tuple[Account, _Lease]] = []
        # Sent, answer not yet recorded: if the run stops now they go back as unknown, never as
        # "not sent" (their re-send may answer "already present", which must settle as consumed).
        self.in_flight: list[tuple[Account, _Lease]] = []
        self.in_flight_mode = ""
        self.per_call = timedelta(
            seconds=settings.MANAGER_CONNECT_TIMEOUT + settings.MANAGER_READ_TIMEOUT
        )
        self.wanted = 0
        self.delivered = 0
        self.shortfall_reason = ""
        self.strays: list[str] = []

    def short(self, reason: str) -> None:
        """Record why the run delivered less than wanted (the first reason stands)."""
        self.shortfall_reason = self.shortfall_reason or reason

    def run(self) -> tuple[str, str]:
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
                return RunStatus.ABANDONED, ""
            need = self._need(now)
            self.wanted = need.wanted + (run.requested_accounts or 0)
            target = need.accounts + (run.requested_accounts or 0)
            ReplenishmentRun.objects.filter(pk=run.pk).update(
                need=target, need_explained=need.explained[:255]
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
                outcomes, stop = self._send(chunk)
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
                outcomes, stop = self._send(chunk)
                self.delivered += sum(outcome in _DELIVERED for outcome in outcomes)
                rejections_left -= sum(outcome == AttemptOutcome.REJECTED for outcome in outcomes)
                if stop:
                    self.short(Shortfall.CONFIG_ERROR)
                    return RunStatus.CONFIG_ERROR, stop
        except _LeaseLost:
            self.short(Shortfall.LEASE_LOST)
        if need.capped_by:
            self.short(need.capped_by)
        return RunStatus.FINISHED, ""

    def _need(self, now: datetime) -> Need:
        run = self.run_obj
        pending = list(
            WebhookEvent.objects.filter(status=EventStatus.QUEUED)
            .order_by("-id")
            .values_list("pk", flat=True)
        )
        if not pending:
            explained = "no event pending: re-sending unknown outcomes only"
            need = Need(accounts=0, wanted=0, capped_by="", explained=explained)
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
            need = Need(
                need.accounts, need.wanted, need.capped_by, f"event #{event.pk}: {need.explained}"
            )
        if run.requested_accounts:
            explained = f"{need.explained}; manual push of {run.requested_accounts} (not capped)"
            need = Need(need.accounts, need.wanted, need.capped_by, explained)
        return need

    def _reserve(self, count: int, *, unresolved: bool) -> list[tuple[Account, _Lease]]:
        """Reserve one chunk for the worst case of sending it, and extend the run's lease to match."""
        now = timezone.now()
        lease = _Lease(self.run_obj.lease_id, now + self.per_call * count + lease_margin())
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

    def _send(self, chunk: list[tuple[Account, _Lease]]) -> tuple[list[AttemptOutcome], str]:
        """Send one reserved chunk: each account's outcome, and the configuration error that stopped it."""
        outcomes = []
        for account, lease in chunk:
            if self._sendable(account, lease):
                self.unsent.append((account, lease))
            else:
                outcomes.append(AttemptOutcome.REJECTED)
        sent, stop = self._import_unsent()
        return outcomes + sent, stop

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
            settled = pool.account_settle_rejected(
                account_id=account.pk, lease_id=lease.id, now=now, error=error, sent=False
            )
            ImportAttempt.objects.create(
                account=account,
                run=self.run_obj,
                sent=False,
                outcome=AttemptOutcome.REJECTED,
                error=error if settled else f"{error} {MSG_LEASE_LOST}",
            )
        return False

    def _import_unsent(self) -> tuple[list[AttemptOutcome], str]:
        """Send every reserved account: their outcomes, and the configuration error that stopped it, or ""."""
        outcomes: list[AttemptOutcome] = []
        batchable = []
        if self.policy.import_mode == ImportMode.BATCH and self._drop_lost_leases():
            # The manager keeps only the first line of an email (docs/MANAGER.md, batch mode), so two
            # accounts with one email never share a batch: the second goes single below.
            emails = set()
            for account, lease in self.unsent:
                if batch_safe(account) and account.email.lower() not in emails:
                    emails.add(account.email.lower())
                    batchable.append((account, lease))
        if len(batchable) > 1:
            self.unsent = [item for item in self.unsent if item not in batchable]
            self.in_flight, self.in_flight_mode = batchable, ImportMode.BATCH
            answers = self.client.import_batch([a for a, _ in batchable])
            self.strays.extend(answers.strays)
            stop_answer = None
            while self.in_flight:
                account, lease = self.in_flight[0]
                answer = answers.by_account[account.pk]
                outcome = self._record(account, lease, answer, ImportMode.BATCH)
                self.in_flight.pop(0)
                outcomes.append(outcome)
                if outcome == AttemptOutcome.CONFIG_ERROR:
                    stop_answer = stop_answer or answer
            if stop_answer is not None:
                return outcomes, self._stop(stop_answer)
        while self.unsent:
            if not self._drop_lost_leases():
                break
            account, lease = self.unsent.pop(0)
            self.in_flight, self.in_flight_mode = [(account, lease)], ImportMode.SINGLE
            answer = self.client.import_single(account)
            outcome = self._record(account, lease, answer, ImportMode.SINGLE)
            self.in_flight.clear()
            outcomes.append(outcome)
            if outcome == AttemptOutcome.CONFIG_ERROR:
                return outcomes, self._stop(answer)
        return outcomes, ""

    def _drop_lost_leases(self) -> bool:
        """Forget reserved accounts whose lease is gone; whether any are left to send.

        Reconcile recovered them (and wrote their attempt rows) while this worker was frozen,
        and another run may have imported them since: they are no longer this run's to send.
        """
        if not self.unsent:
            return False
        held = pool_selectors.account_ids_leased(
            account_ids=[a.pk for a, _ in self.unsent],
            lease_id=self.run_obj.lease_id,
            now=timezone.now(),
        )
        self.unsent = [(a, lease) for a, lease in self.unsent if a.pk in held]
        return bool(self.unsent)

    def _stop(self, answer: ManagerAnswer) -> str:
        self.release_unsent()
        return MSG_CONFIG_ERROR % (answer.http_status or answer.failure, answer.text)

    def release_unsent(self) -> None:
        now = timezone.now()
        for account, lease in self.unsent:
            if pool.account_release(account_id=account.pk, lease_id=lease.id, now=now):
                ReplenishmentRun.objects.filter(pk=self.run_obj.pk).update(
                    returned=F("returned") + 1
                )
        self.unsent.clear()

    def abort(self, *, error: str) -> None:
        """The run failed: accounts sent but unrecorded go back as unknown, the unsent go back unsent.

        If the database still refuses (the failure may be the database itself), they stay
        reserved and lease recovery returns them as unknown: still never as "not sent".
        """
        for account, lease in self.in_flight:
            answer = ManagerAnswer(None, None, MSG_ANSWER_UNRECORDED % error, FAILURE_UNRECORDED)
            try:
                self._record(account, lease, answer, self.in_flight_mode)
            except Exception:
                logger.exception(
                    "Could not record account %s as unknown; lease recovery will", account.pk
                )
        self.in_flight.clear()
        try:
            self.release_unsent()
        except Exception:
            logger.exception(
                "Could not release the unsent accounts of run %s; lease recovery will",
                self.run_obj.pk,
            )

    def _record(
        self, account: Account, lease: _Lease, answer: ManagerAnswer, mode: str
    ) -> AttemptOutcome:
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
            settle = partial(
                pool.account_settle_unknown,
                **common,
                error=answer.text or answer.failure,
                retry_after=retry_after,
            )
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
                team_id=answer.team_id,
            )
            if settled and outcome == AttemptOutcome.CONSUMED and answer.team_id is not None:
                # Followed from now on (docs/FOLLOW_UP.md); "already present" carries no id.
                FollowedTeam.objects.create(
                    account=account, team_id=answer.team_id, imported_at=now
                )
        return outcome


def _run_finish(*, run: ReplenishmentRun, status: str, error: str, work: _RunWork) -> None:
    """Close the run with its counts and its unmet demand; hand over to what comes next, on commit."""
    from webhooks.tasks import replenish, retry_unknown

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
            error=error,
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
                transaction.on_commit(partial(replenish.enqueue, run_id=queued))
        next_retry = account_next_retry()
        if next_retry is not None:
            transaction.on_commit(
                partial(retry_unknown.using(run_after=max(next_retry, now)).enqueue)
            )
        # Alerts read what this run left behind (its status, its attempts, the pool), so after commit.
        transaction.on_commit(lambda: alerts.alert_evaluate(now=timezone.now()))


# --- Recovering -----------------------------------------------------------------------------


def run_recover_stale(*, now: datetime) -> tuple[int, int]:
    """Abandon runs whose worker died and return their accounts to the pool.

    Called before every run and by `manage.py reconcile`. Returns (runs abandoned, accounts
    recovered). Each recovered account gets an "unknown" attempt row in the same transaction.
    """
    stale = ReplenishmentRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    stale_ids = list(stale.values_list("pk", flat=True))
    abandoned = stale.filter(pk__in=stale_ids).update(
        status=RunStatus.ABANDONED,
        finished_at=now,
        error="The worker stopped before the run finished.",
    )
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
                error=pool.MSG_LEASE_EXPIRED,
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
        delivered = sum(counts.get(outcome, 0) for outcome in _DELIVERED)
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

    from webhooks.tasks import replenish

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
        status="RUNNING"
    ).values_list("id", "task_path", "args_kwargs", "started_at"):
        run_id = (args_kwargs or {}).get("kwargs", {}).get("run_id")
        if (task_path == replenish.module_path and run_id not in live_runs) or (
            started_at is not None and started_at < now - STALE_TASK_AFTER
        ):
            stale.append(task_id)
    failed = DBTaskResult.objects.filter(pk__in=stale, status="RUNNING").update(
        status="FAILED", finished_at=now
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
    alerts.alert_evaluate(now=now)
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

    from webhooks.tasks import replenish

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
        status="READY", task_path=replenish.module_path, args_kwargs__kwargs__run_id=queued
    ).exists()
    if waiting:
        return False, False
    replenish.enqueue(run_id=queued)
    return True, False
