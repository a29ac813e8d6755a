"""After the hand-off: asking the manager what became of each Team this pool imported.

A round asks `GET /admin/teams/{id}/info` for every followed Team (those not yet seen expired
or gone twice in a row), at most FOLLOW_UP_RATE a second, and records the status, the members,
the Team's expiry and the manager's last sync, with every change of status kept. A round is a
single flight; the worker carries it out in slices so that replenishment runs are never held up
behind it. docs/FOLLOW_UP.md describes it for users.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone
from django.utils.translation import gettext_noop
from django_tasks import TaskResultStatus

from poolsite.messages import Stored, message_define, message_store, message_verbatim
from webhooks import queueing
from webhooks.alerting import alerts_evaluate
from webhooks.client import (
    TEAM_CONFIG_ERROR,
    TEAM_GONE,
    TEAM_OK,
    ManagerClient,
    TeamInfo,
    manager_configured,
)
from webhooks.models import (
    FINAL_SIGHTINGS,
    FINAL_STATUSES,
    BatchReport,
    FollowedTeam,
    FollowUpRound,
    RoundStatus,
    TeamStatus,
    TeamStatusChange,
    TeamTotals,
)
from webhooks.selectors import batch_report

logger = logging.getLogger(__name__)

# A slice of a round asks at most this long before it hands the rest to a new task, so a worker
# goes back to the queue (a replenishment run may be waiting) every half minute at the most.
SLICE_SECONDS = 30
# A slice's lease: its worst case (one more call at the client's timeouts) and headroom.
SLICE_MARGIN = timedelta(seconds=60)
# The lease is renewed this often (it covers one call's worst case plus SLICE_MARGIN), and the
# round's progress written every FLUSH_EVERY Teams: a Team then costs one write, its own record.
RENEW_EVERY_SECONDS = 5
FLUSH_EVERY = 100
# A round's error (poolsite.messages): written in English, shown in the reader's language.
MSG_CONFIG_ERROR = message_define(
    "follow_up.config_error",
    gettext_noop(
        "The manager refused the Team-info request (HTTP %s): check MANAGER_BASE_URL and "
        "MANAGER_API_KEY."
    ),
)
MSG_NOT_CONFIGURED = message_define(
    "follow_up.not_configured", gettext_noop("MANAGER_BASE_URL and MANAGER_API_KEY are not set.")
)


class RateLimit:
    """At most `per_second` calls a second, evenly spaced (0: no limit)."""

    def __init__(
        self, per_second: float, *, clock: Callable[[], float] = time.monotonic, sleep=time.sleep
    ):
        self.interval = 1 / per_second if per_second > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self.next_at = clock()

    def wait(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        if now < self.next_at:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = max(now, self.next_at) + self.interval


def team_round_queue(*, requested_by=None, enqueue: bool = True) -> FollowUpRound | None:
    """Queue a round and (with `enqueue`) its task, on commit; None when one is already queued or running."""
    try:
        with transaction.atomic():
            round_ = FollowUpRound.objects.create(requested_by=requested_by)
    except IntegrityError:
        return None
    if enqueue:
        transaction.on_commit(
            partial(queueing.task_enqueue, path=queueing.FOLLOW_UP, round_id=round_.pk)
        )
    return round_


def team_round_due(*, now: datetime) -> bool:
    """Whether the periodic round (every FOLLOW_UP_EVERY_HOURS) is due: there is something to ask."""
    hours = settings.FOLLOW_UP_EVERY_HOURS
    if hours <= 0 or not _followed().exists():
        return False
    last = FollowUpRound.objects.order_by("-id").values_list("created_at", flat=True).first()
    return last is None or last <= now - timedelta(hours=hours)


def _followed():
    return FollowedTeam.objects.filter(final_sightings__lt=FINAL_SIGHTINGS)


@dataclass
class SliceResult:
    asked: int = 0
    changed: int = 0
    unanswered: int = 0
    done: bool = False
    stopped: str = ""  # a configuration error (in English), or ""
    stopped_msg: dict | None = None  # the same as a stored message (poolsite.messages)

    def stop(self, stored: Stored) -> None:
        self.stopped, self.stopped_msg = stored


def team_round_run(
    *,
    round_id: int,
    client: ManagerClient | None = None,
    seconds: float | None = SLICE_SECONDS,
    rate: float | None = None,
) -> SliceResult | None:
    """Carry out a round, one slice of `seconds` (None: all of it). None if it is not ours to run.

    The slice takes the round with a conditional UPDATE (queued, or running with its lease run
    out) and renews that lease before each call, so two workers never ask at once.
    """
    now = timezone.now()
    taken = FollowUpRound.objects.filter(
        Q(status=RoundStatus.QUEUED) | Q(status=RoundStatus.RUNNING, lease_expires_at__lt=now),
        pk=round_id,
    ).update(status=RoundStatus.RUNNING, started_at=now, lease_expires_at=now + SLICE_MARGIN)
    if taken != 1:
        return None
    if not manager_configured():
        error = message_store("follow_up.not_configured")
        _round_finish(round_id=round_id, status=RoundStatus.CONFIG_ERROR, error=error)
        return SliceResult(stopped=error[0], stopped_msg=error[1])
    own_client = client is None
    client = client or ManagerClient.from_settings()
    limit = RateLimit(settings.FOLLOW_UP_RATE if rate is None else rate)
    per_call = timedelta(seconds=settings.MANAGER_CONNECT_TIMEOUT + settings.MANAGER_READ_TIMEOUT)
    result = SliceResult()
    started = time.monotonic()
    flushed = SliceResult()  # what the round's row already counts
    renewed_at = 0.0

    def flush(cursor: int) -> None:
        # The round's progress, every FLUSH_EVERY Teams and at the end of the slice: one write
        # per Team (its own record) instead of three.
        FollowUpRound.objects.filter(pk=round_id).update(
            cursor=cursor,
            asked=F("asked") + (result.asked - flushed.asked),
            changed=F("changed") + (result.changed - flushed.changed),
            unanswered=F("unanswered") + (result.unanswered - flushed.unanswered),
        )
        flushed.asked, flushed.changed, flushed.unanswered = (
            result.asked,
            result.changed,
            result.unanswered,
        )

    cursor = FollowUpRound.objects.values_list("cursor", flat=True).get(pk=round_id)
    try:
        while seconds is None or time.monotonic() - started < seconds:
            teams = list(
                _followed()
                .filter(pk__gt=cursor)
                .order_by("pk")
                .values_list("pk", "team_id", "status")[:200]
            )
            if not teams:
                result.done = True
                break
            for pk, team_id, status in teams:
                if seconds is not None and time.monotonic() - started >= seconds:
                    break
                limit.wait()
                if time.monotonic() - renewed_at > RENEW_EVERY_SECONDS:
                    held = FollowUpRound.objects.filter(
                        pk=round_id, status=RoundStatus.RUNNING
                    ).update(lease_expires_at=timezone.now() + per_call + SLICE_MARGIN)
                    if not held:
                        return (
                            result  # taken over after this worker stalled: the new holder goes on
                        )
                    renewed_at = time.monotonic()
                info = client.team_info(team_id)
                if info.state == TEAM_CONFIG_ERROR:
                    result.stop(message_store("follow_up.config_error", info.http_status))
                    break
                result.asked += 1
                if info.state in (TEAM_OK, TEAM_GONE):
                    result.changed += team_record(
                        team_pk=pk, previous=status, info=info, now=timezone.now()
                    )
                else:
                    result.unanswered += 1
                cursor = pk
                if result.asked % FLUSH_EVERY == 0:
                    flush(cursor)
            if result.stopped:
                break
        flush(cursor)
    except Exception as exc:
        logger.exception("Follow-up round %s failed", round_id)
        error = message_verbatim(repr(exc), limit=500)
        _round_finish(round_id=round_id, status=RoundStatus.FAILED, error=error)
        raise
    finally:
        if own_client:
            client.close()
    if result.stopped:
        _round_finish(
            round_id=round_id,
            status=RoundStatus.CONFIG_ERROR,
            error=(result.stopped, result.stopped_msg),
        )
    elif result.done:
        _round_finish(round_id=round_id, status=RoundStatus.FINISHED, error=None)
    else:
        _round_continue(round_id=round_id)
    return result


def _team_counted(status: str, max_members, current_members) -> tuple[int, int]:
    """(1 if the Team counts as active, its free seats) as the dashboard counts them: seats are
    max − current members of an active Team whose members are known."""
    if status != TeamStatus.ACTIVE:
        return 0, 0
    known = max_members is not None and current_members is not None
    return 1, (max_members - current_members) if known else 0


_ADD_TEAM_TOTALS_SQL = (
    "INSERT INTO webhooks_teamtotals (id, followed, active_teams, active_seats)"
    " VALUES (1, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
    " followed = webhooks_teamtotals.followed + excluded.followed,"
    " active_teams = webhooks_teamtotals.active_teams + excluded.active_teams,"
    " active_seats = webhooks_teamtotals.active_seats + excluded.active_seats"
)


def team_totals_add(*, followed: int = 0, active_teams: int = 0, active_seats: int = 0) -> None:
    """Add to the Team totals (TeamTotals) in the caller's transaction: one upsert."""
    if followed or active_teams or active_seats:
        with connection.cursor() as cursor:
            cursor.execute(_ADD_TEAM_TOTALS_SQL, [followed, active_teams, active_seats])


def team_totals_recount() -> TeamTotals:
    """The totals from every followed Team, for rows written without them (bench seeds)."""
    is_active = Q(status=TeamStatus.ACTIVE)
    sums = FollowedTeam.objects.aggregate(
        followed=Count("pk"),
        active_teams=Count("pk", filter=is_active),
        active_seats=Sum(F("max_members") - F("current_members"), filter=is_active),
    )
    return TeamTotals.objects.update_or_create(
        pk=1, defaults={**sums, "active_seats": sums["active_seats"] or 0}
    )[0]


def team_record(*, team_pk: int, previous: str, info: TeamInfo, now: datetime) -> int:
    """Record one answer about a Team; 1 if its status changed (the change is kept), else 0.

    Writes only the Team's own fields and history: never the account's state in the pool.
    """
    status = TeamStatus.GONE if info.state == TEAM_GONE else info.status
    changes = {"status": status, "checked_at": now}
    if info.state == TEAM_OK:
        changes.update(
            current_members=info.current_members,
            max_members=info.max_members,
            expires_at=info.expires_at,
            last_sync=info.last_sync,
        )
    final = F("final_sightings") + 1 if status in FINAL_STATUSES else 0
    changed = status != previous
    with transaction.atomic():
        # Conditional on the status this round read: a concurrent writer's change is not overwritten blind.
        team = FollowedTeam.objects.filter(pk=team_pk, status=previous)
        if connection.features.has_select_for_update:
            team = team.select_for_update()
        before = team.values_list("max_members", "current_members").first()
        if before is None:
            return 0
        updated = FollowedTeam.objects.filter(pk=team_pk, status=previous).update(
            **changes, final_sightings=final, **({"status_since": now} if changed else {})
        )
        if updated:
            after = (
                changes.get("max_members", before[0]),
                changes.get("current_members", before[1]),
            )
            was, now_is = _team_counted(previous, *before), _team_counted(status, *after)
            team_totals_add(active_teams=now_is[0] - was[0], active_seats=now_is[1] - was[1])
        if updated and changed:
            TeamStatusChange.objects.create(
                team_id=team_pk, at=now, old_status=previous, new_status=status
            )
    return int(bool(updated and changed))


def _round_finish(*, round_id: int, status: str, error: Stored | None) -> None:
    finished = FollowUpRound.objects.filter(pk=round_id, status=RoundStatus.RUNNING).update(
        status=status,
        finished_at=timezone.now(),
        lease_expires_at=None,
        error=error[0] if error else "",
        error_msg=error[1] if error else None,
    )
    if finished and status == RoundStatus.FINISHED:
        batch_report_make(now=timezone.now())
    # A refused key raises the existing configuration alert; ban waves are alerts too.
    alerts_evaluate(now=timezone.now())


# Reports kept: the newest is shown; a few older ones stay for comparison, the rest are dropped.
REPORTS_KEPT = 10


def batch_report_make(*, now: datetime) -> BatchReport:
    """Judge every batch and supplier now and keep the result for the batches page."""
    report = BatchReport.objects.create(
        data=json.loads(json.dumps(batch_report(now=now), cls=DjangoJSONEncoder))
    )
    stale = BatchReport.objects.order_by("-id").values_list("pk", flat=True)[REPORTS_KEPT:]
    BatchReport.objects.filter(pk__in=list(stale)).delete()
    return report


def _round_continue(*, round_id: int) -> None:
    """Hand the rest of the round to a new task, so the worker takes other work in between."""
    FollowUpRound.objects.filter(pk=round_id, status=RoundStatus.RUNNING).update(
        lease_expires_at=timezone.now()
    )
    queueing.task_enqueue(path=queueing.FOLLOW_UP, round_id=round_id)


def team_round_resume(*, now: datetime) -> bool:
    """A round whose worker died (its lease ran out) or whose task was lost: give it a task again."""
    from django_tasks_db.models import DBTaskResult

    stuck = (
        FollowUpRound.objects.filter(
            Q(status=RoundStatus.QUEUED, created_at__lt=now - SLICE_MARGIN)
            | Q(status=RoundStatus.RUNNING, lease_expires_at__lt=now)
        )
        .values_list("pk", flat=True)
        .first()
    )
    if stuck is None:
        return False
    waiting = DBTaskResult.objects.filter(
        status=TaskResultStatus.READY,
        task_path=queueing.FOLLOW_UP,
        args_kwargs__kwargs__round_id=stuck,
    ).exists()
    if waiting:
        return False
    queueing.task_enqueue(path=queueing.FOLLOW_UP, round_id=stuck)
    return True
