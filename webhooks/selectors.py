"""Reads for replenishment."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta

from django.db.models import Count, Q, Sum
from django.utils import timezone

from accounts.models import AccountStatus
from accounts.selectors import (
    account_batch_labels,
    account_consumed_last_week,
    account_consumed_per_day,
    account_consumption_rate,
    account_count,
    account_counts_by_batch,
    account_pool_summary,
    account_rejections_by_batch,
    account_runway_days,
)
from webhooks.models import (
    AttemptOutcome,
    BatchReport,
    EventStatus,
    FollowedTeam,
    FollowUpRound,
    ImportAttempt,
    ReplenishmentPolicy,
    ReplenishmentRun,
    RoundStatus,
    RunStatus,
    TeamStatus,
    TeamStatusChange,
    TeamTotals,
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
    return ImportAttempt.objects.filter(
        created_at__gt=since, outcome=AttemptOutcome.CONSUMED
    ).count()


HOUR = timedelta(hours=1)


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
    last_week = account_consumed_last_week(per_day=per_day, today=today)
    rate = account_consumption_rate(consumed_last_week=last_week)
    return {
        **summary,
        "seats_in_stock": summary["available_usable"] * policy.seats_per_account,
        "consumption_per_day": consumption,
        "consumed_last_7_days": last_week,
        "consumed_per_day": round(rate, 1),
        "runway_days": account_runway_days(available=summary["available_usable"], rate=rate),
    }


IN_MANAGER_KEYS = (*TeamStatus.values, "not_followed", "never_checked")


def team_counts_in_manager() -> dict[str, int]:
    """Consumed accounts by their Team's status in the manager, as of the last check.

    `never_checked`: followed, not yet asked; `not_followed`: consumed without a Team id (settled
    by "already present", or imported before the pool kept ids). Two grouped counts.
    """
    counts = dict.fromkeys(IN_MANAGER_KEYS, 0)
    followed = 0
    for status, n in FollowedTeam.objects.order_by().values_list("status").annotate(n=Count("*")):
        counts[status or "never_checked"] += n
        followed += n
    consumed = account_count(status=AccountStatus.CONSUMED)
    counts["not_followed"] = max(0, consumed - followed)
    return counts


# --- After the hand-off: imported Teams, by batch and by supplier -----------------------------

# A Team in one of these has stopped giving seats: it "died" the first time it was seen so.
DEAD_STATUSES = (TeamStatus.BANNED, TeamStatus.EXPIRED, TeamStatus.ERROR, TeamStatus.GONE)
SURVIVAL_DAYS = (7, 30)
# A batch needs this many followed Teams before it can be named the worst one.
WORST_BATCH_MIN_TEAMS = 5


def team_dashboard(*, now: datetime) -> dict:
    """The dashboard's view of imported Teams: seats the manager really has on them, bans of the
    last 7 days, and the batch whose Teams died most (three queries)."""
    # Kept up to date with every change to a followed Team (TeamTotals): summing them here read
    # every followed Team.
    totals = TeamTotals.objects.filter(pk=1).first() or TeamTotals()
    followed = totals.followed
    banned_week = TeamStatusChange.objects.filter(
        new_status=TeamStatus.BANNED, at__gte=now - timedelta(days=7)
    ).count()
    # The worst batch, from the newest batch report (made by the worker after each round).
    worst = None
    newest = BatchReport.objects.order_by("-id").values_list("data", flat=True).first() or {}
    for row in newest.get("batches", []):
        teams = sum(
            n
            for key, n in row["in_manager"].items()
            if key not in ("not_followed", "never_checked")
        )
        dead = sum(row["in_manager"][key] for key in DEAD_STATUSES)
        if teams < WORST_BATCH_MIN_TEAMS or not dead:
            continue
        share = dead / teams
        if worst is None or share > worst["share"]:
            worst = {
                "batch": row["batch"],
                "label": row["label"],
                "supplier": row["supplier"],
                "teams": teams,
                "dead": dead,
                "share": share,
                "percent": round(100 * share),
            }
    return {
        "followed": followed,
        "active_teams": totals.active_teams,
        "active_seats": max(0, totals.active_seats),
        "banned_last_7_days": banned_week,
        "ban_rate_7_days": round(100 * banned_week / followed, 1) if followed else None,
        "worst_batch": worst,
    }


def batch_report(*, now: datetime) -> dict:
    """One row per batch, and one per supplier, of what became of its accounts and their Teams.

    Per row: accounts loaded, consumed, rejected (with the three commonest reasons), held for
    staff; the consumed by their Team's status in the manager; the median days from import to
    banned; and survival at 7 and 30 days: of the Teams imported at least that long ago, the share
    not dead (banned, expired, error or gone) that many days after import.
    """
    batches = account_batch_labels()
    rows: dict = {}

    def row(batch_id):
        if batch_id not in rows:
            base = batches.get(batch_id) or {
                "batch": batch_id,
                "label": "",
                "supplier": "",
                "created_at": None,
            }
            rows[batch_id] = _report_row(base)
        return rows[batch_id]

    for batch_id, status, usable, n in account_counts_by_batch():
        entry = row(batch_id)
        entry["loaded"] += n
        if status == AccountStatus.CONSUMED:
            entry["consumed"] += n
        elif status == AccountStatus.REJECTED:
            entry["rejected"] += n
        elif status == AccountStatus.AVAILABLE and not usable:
            entry["held"] += n
    for batch_id, reason, n in account_rejections_by_batch():
        row(batch_id)["reasons"].append((n, reason[:120]))
    teams = (
        FollowedTeam.objects.order_by()
        .values_list("account__batch_id", "status")
        .annotate(n=Count("*"))
    )
    for batch_id, status, n in teams:
        row(batch_id)["in_manager"][status or "never_checked"] += n
    _report_lifetimes(rows, row, now=now)
    for entry in rows.values():
        entry["in_manager"]["not_followed"] = max(
            0, entry["consumed"] - sum(entry["in_manager"].values())
        )
    suppliers: dict = {}
    for entry in rows.values():
        name = entry["supplier"]
        total = suppliers.setdefault(
            name, _report_row({"supplier": name, "label": "", "batch": None, "created_at": None})
        )
        total["batches"] += 1
        for key in ("loaded", "consumed", "rejected", "held"):
            total[key] += entry[key]
        for key, n in entry["in_manager"].items():
            total["in_manager"][key] += n
        total["reasons"].extend(entry["reasons"])
        total["_ban_days"].extend(entry["_ban_days"])
        for days in SURVIVAL_DAYS:
            for part in ("eligible", "alive"):
                total["_survival"][days][part] += entry["_survival"][days][part]
    for entry in [*rows.values(), *suppliers.values()]:
        _report_finish(entry)
    ordered = sorted(rows.values(), key=lambda e: -(e["batch"] or 0))
    return {
        "batches": ordered,
        "suppliers": sorted(suppliers.values(), key=lambda e: e["supplier"]),
    }


def _report_row(base: dict) -> dict:
    return {
        **base,
        "batches": 0,
        "loaded": 0,
        "consumed": 0,
        "rejected": 0,
        "held": 0,
        "reasons": [],
        "in_manager": dict.fromkeys(IN_MANAGER_KEYS, 0),
        "_ban_days": [],
        "_survival": {days: {"eligible": 0, "alive": 0} for days in SURVIVAL_DAYS},
    }


def _report_lifetimes(rows: dict, row, *, now: datetime) -> None:
    """Days to a ban, and survival: each Team's import time and first death, read once."""
    # One pass over the dead statuses, oldest first: each Team's first death and first ban.
    died_at: dict[int, datetime] = {}
    banned_at: dict[int, datetime] = {}
    changes = (
        TeamStatusChange.objects.filter(new_status__in=DEAD_STATUSES)
        .order_by("at")
        .values_list("team_id", "at", "new_status")
    )
    for team_id, at, status in changes:
        died_at.setdefault(team_id, at)
        if status == TeamStatus.BANNED:
            banned_at.setdefault(team_id, at)
    for pk, batch_id, imported_at in FollowedTeam.objects.values_list(
        "pk", "account__batch_id", "imported_at"
    ):
        entry = row(batch_id)
        if pk in banned_at:
            entry["_ban_days"].append((banned_at[pk] - imported_at).total_seconds() / 86400)
        died = died_at.get(pk)
        for days in SURVIVAL_DAYS:
            if imported_at <= now - timedelta(days=days):
                entry["_survival"][days]["eligible"] += 1
                if died is None or died > imported_at + timedelta(days=days):
                    entry["_survival"][days]["alive"] += 1


def _report_finish(entry: dict) -> None:
    ban_days = sorted(entry.pop("_ban_days"))
    entry["median_days_to_ban"] = round(statistics.median(ban_days), 1) if ban_days else None
    survival = entry.pop("_survival")
    for days in SURVIVAL_DAYS:
        eligible = survival[days]["eligible"]
        entry[f"survival_{days}d"] = (
            round(100 * survival[days]["alive"] / eligible) if eligible else None
        )
        entry[f"survival_{days}d_of"] = eligible
    counted: dict[str, int] = {}
    for n, reason in entry["reasons"]:
        counted[reason] = counted.get(reason, 0) + n
    entry["reasons"] = sorted(counted.items(), key=lambda item: -item[1])[:3]


def event_refused_calls_since(*, since: datetime) -> int:
    """Webhook calls refused since `since`, counting the calls folded into each refused row."""
    refused = WebhookEvent.objects.filter(status=EventStatus.REFUSED, received_at__gte=since)
    return refused.aggregate(calls=Sum("calls"))["calls"] or 0


def run_counts_by_status() -> dict[str, int]:
    """Runs by status, zeros included: one grouped count the (status, id) index answers."""
    counts = dict.fromkeys(RunStatus.values, 0)
    rows = (
        ReplenishmentRun.objects.order_by()
        .values("status")
        .annotate(n=Count("*"))
        .values_list("status", "n")
    )
    counts.update(rows)
    return counts


def attempt_counts_by_outcome_since(*, since: datetime) -> dict[str, int]:
    """Import attempts since `since` by outcome, zeros included: a range of the (outcome,
    created_at) index per outcome, never the whole history."""
    counts = dict.fromkeys(AttemptOutcome.values, 0)
    for outcome in AttemptOutcome.values:
        counts[outcome] = ImportAttempt.objects.filter(
            outcome=outcome, created_at__gte=since
        ).count()
    return counts


def attempt_last_confirmed_at() -> datetime | None:
    """When the manager last confirmed an import (the newest consumed attempt): one index probe."""
    return (
        ImportAttempt.objects.filter(outcome=AttemptOutcome.CONSUMED)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )


def manager_config_refusal(*, now: datetime) -> dict | None:
    """The newest word on the configuration, when it is a refusal: the last run or follow-up round
    that reached the manager, if it stopped on a configuration error ({"pk", "error", "error_msg",
    "round"}).

    A run that crashed or lost its worker says nothing about the configuration either way.
    """
    run = (
        ReplenishmentRun.objects.filter(status__in=[RunStatus.FINISHED, RunStatus.CONFIG_ERROR])
        .order_by("-id")
        .values("pk", "status", "error", "error_msg", "finished_at")
        .first()
    )
    round_ = (
        FollowUpRound.objects.filter(status__in=[RoundStatus.FINISHED, RoundStatus.CONFIG_ERROR])
        .order_by("-id")
        .values("pk", "status", "error", "error_msg", "finished_at")
        .first()
    )
    last = max((r for r in (run, round_) if r), key=lambda r: r["finished_at"] or now, default=None)
    if last is None or last["status"] != RunStatus.CONFIG_ERROR:
        return None
    return {
        "pk": last["pk"],
        "error": last["error"],
        "error_msg": last["error_msg"],
        "round": last is round_,
    }


def attempts_last_sent_all_unknown(*, count: int) -> bool:
    """Whether the last `count` attempts sent to the manager all ended without an answer (False
    while fewer than `count` were sent): at most `count` rows of the newest."""
    latest = list(
        ImportAttempt.objects.filter(sent=True)
        .order_by("-id")
        .values_list("outcome", flat=True)[:count]
    )
    return len(latest) == count and all(outcome == AttemptOutcome.UNKNOWN for outcome in latest)


def team_bans_since(*, since: datetime) -> int:
    """Teams this pool imported that the follow-up rounds saw banned since `since`."""
    return TeamStatusChange.objects.filter(new_status=TeamStatus.BANNED, at__gte=since).count()
