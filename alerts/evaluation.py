"""Alerts: the conditions staff must hear about, raised and cleared.

A condition notifies once when it becomes true and again only after it has cleared: its
AlertState row is flipped by a conditional UPDATE, so two processes evaluating at once send once.
Evaluation runs after every replenishment run and follow-up round and on every reconcile pass
(webhooks.alerting). The pool and the runs are read only through the accounts and webhooks
selectors. Notifications leave after the commit that raised them (alerts.delivery).
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from functools import partial

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from accounts.selectors import (
    account_consumed_last_week,
    account_consumed_per_day,
    account_consumption_rate,
    account_ever_loaded,
    account_runway_days,
    account_usable_count,
)
from alerts.delivery import alert_deliver
from alerts.models import (
    AlertCondition,
    AlertDelivery,
    AlertEvent,
    AlertEventKind,
    AlertSettings,
    AlertState,
)
from poolsite.messages import message_define, message_store
from poolsite.text import redact
from webhooks.selectors import (
    attempts_last_sent_all_unknown,
    manager_config_refusal,
    team_bans_since,
)

logger = logging.getLogger(__name__)

# Titles and bodies are stored (poolsite.messages): in English in their columns, as codes that
# the pages render in the reader's language and notifications in NOTIFY_LANGUAGE.
TITLES = {
    AlertCondition.LOW_STOCK: gettext_noop("Spare-account pool: few accounts left"),
    AlertCondition.SHORT_RUNWAY: gettext_noop("Spare-account pool: runs out in a few days"),
    AlertCondition.CONFIG_ERROR: gettext_noop("Spare-account pool: the manager refused an import"),
    AlertCondition.UNKNOWN_OUTCOMES: gettext_noop("Spare-account pool: imports keep failing"),
    AlertCondition.BANNED_TEAMS: gettext_noop(
        "Spare-account pool: imported Teams are being banned"
    ),
}
MSG_LOW_STOCK = gettext_noop(
    "Only %(available)s usable accounts are left in the pool (alert below %(threshold)s). "
    "Load more accounts: admin → Account pool → Accounts → Load accounts, or manage.py load_accounts."
)
MSG_SHORT_RUNWAY = gettext_noop(
    "At the last 7 days' consumption (%(per_day)s accounts a day) the pool's %(available)s usable "
    "accounts last about %(days)s days (alert under %(threshold)s days). Load more accounts before they run out."
)
MSG_CONFIG_ERROR = gettext_noop(
    "Replenishment run #%(run)s stopped: the manager refused the request (wrong key, wrong URL or a "
    "redirect). Its record says: “%(error)s”. Nothing was lost: the accounts went back to the pool. Fix MANAGER_BASE_URL or MANAGER_API_KEY "
    "(the key set in the manager under 库存预警 Webhook), restart the service, then push accounts "
    "again from the runs page."
)
MSG_UNKNOWN_OUTCOMES = gettext_noop(
    "The last %(count)s imports all ended without an answer from the manager (timeout, dropped "
    "connection or server error). Check that the manager is up and reachable at MANAGER_BASE_URL. "
    "The accounts are not lost: they are re-sent automatically, and held for staff after repeated failures."
)
MSG_CONFIG_ERROR_ROUND = gettext_noop(
    "Follow-up round #%(run)s stopped: the manager refused the Team-info request (wrong key, wrong URL "
    "or a redirect). Its record says: “%(error)s”. Fix MANAGER_BASE_URL or MANAGER_API_KEY, restart the "
    "service, then check the Teams again from the dashboard."
)
MSG_BANNED_TEAMS = gettext_noop(
    "%(count)s Teams this pool imported were banned in the last 24 hours (alert at %(threshold)s). "
    "Their seats no longer count in the manager's stock. See which batches and suppliers they came "
    "from: admin → Account pool → Batches."
)
MESSAGES = {
    AlertCondition.LOW_STOCK: MSG_LOW_STOCK,
    AlertCondition.SHORT_RUNWAY: MSG_SHORT_RUNWAY,
    AlertCondition.CONFIG_ERROR: MSG_CONFIG_ERROR,
    AlertCondition.UNKNOWN_OUTCOMES: MSG_UNKNOWN_OUTCOMES,
    AlertCondition.BANNED_TEAMS: MSG_BANNED_TEAMS,
}


for _condition, _template in TITLES.items():
    message_define(f"alert.title.{_condition}", _template)
for _condition, _template in MESSAGES.items():
    message_define(f"alert.{_condition}", _template)
message_define("alert.config_error_round", MSG_CONFIG_ERROR_ROUND)


# --- Conditions -----------------------------------------------------------------------------


def alert_settings_get() -> AlertSettings:
    return AlertSettings.objects.get_or_create(pk=1)[0]


def _low_stock(config: AlertSettings, now: datetime) -> dict | None:
    threshold = config.stock_below
    # Until an account was ever loaded the pool is not low, only empty: a fresh install stays
    # quiet (no alert, so no "no destination configured" warning either).
    if not threshold or not account_ever_loaded():
        return None
    available = account_usable_count(limit=threshold)
    return {"available": available, "threshold": threshold} if available < threshold else None


def _short_runway(config: AlertSettings, now: datetime) -> dict | None:
    """dashboard_stats()["runway_days"] under the threshold, without counting the whole pool.

    The runway is under N days exactly when fewer than N × (accounts a day) are left, so counting
    stops there; below it the count, and so the runway, is exact.
    """
    threshold = config.runway_below_days
    if not threshold or not account_ever_loaded():
        return None
    # Eight days back: the last seven calendar days, whatever TIME_ZONE's offset from UTC.
    per_day = account_consumed_per_day(since=now - timedelta(days=8), until=now)
    last_week = account_consumed_last_week(per_day=per_day, today=timezone.localdate(now))
    if not last_week:
        return None  # no consumption: the runway is unknown, not short
    rate = account_consumption_rate(consumed_last_week=last_week)
    available = account_usable_count(limit=math.ceil(threshold * rate))
    runway = account_runway_days(available=available, rate=rate)
    if runway >= threshold:
        return None
    return {
        "per_day": f"{rate:.1f}",
        "available": available,
        "days": runway,
        "threshold": threshold,
    }


def _config_error(config: AlertSettings, now: datetime) -> dict | None:
    """The newest word on the configuration: the last run or follow-up round that reached the manager."""
    if not config.config_error:
        return None
    last = manager_config_refusal(now=now)
    if last is None:
        return None
    error = redact(last["error"])[:300]
    if last["error_msg"]:
        error = (error, last["error_msg"])  # shown in the reader's language too
    return {"run": last["pk"], "error": error, "round": last["round"]}


def _unknown_outcomes(config: AlertSettings, now: datetime) -> dict | None:
    count = config.unknown_in_a_row
    if not count:
        return None
    if not attempts_last_sent_all_unknown(count=count):
        return None
    return {"count": count}


def _banned_teams(config: AlertSettings, now: datetime) -> dict | None:
    threshold = config.banned_in_a_day
    if not threshold:
        return None
    count = team_bans_since(since=now - timedelta(hours=24))
    if count < threshold:
        return None
    return {"count": count, "threshold": threshold}


CHECKS = {
    AlertCondition.LOW_STOCK: _low_stock,
    AlertCondition.SHORT_RUNWAY: _short_runway,
    AlertCondition.CONFIG_ERROR: _config_error,
    AlertCondition.UNKNOWN_OUTCOMES: _unknown_outcomes,
    AlertCondition.BANNED_TEAMS: _banned_teams,
}


# --- Raising and clearing -------------------------------------------------------------------


def alert_evaluate(*, now: datetime) -> None:
    """Raise the conditions that became true and clear those that no longer hold.

    Called after every run and on every reconcile pass; never raises, so an alerting problem
    cannot fail a run.
    """
    try:
        config = alert_settings_get()
        active = _active_by_condition()
        for condition, check in CHECKS.items():
            params = check(config, now)
            if params is not None and not active[condition]:
                _raise(condition=condition, params=params, now=now)
            elif params is None and active[condition]:
                _clear(condition=condition, now=now)
    except Exception:
        logger.exception("Evaluating alerts failed")


def _active_by_condition() -> dict[str, bool]:
    active = dict(AlertState.objects.values_list("condition", "active"))
    missing = [condition for condition in AlertCondition.values if condition not in active]
    if missing:
        AlertState.objects.bulk_create(
            [AlertState(condition=c) for c in missing], ignore_conflicts=True
        )
        active.update(dict.fromkeys(missing, False))
    return active


def _raise(*, condition: str, params: dict, now: datetime) -> None:
    code = "alert.config_error_round" if params.pop("round", False) else f"alert.{condition}"
    title, message = message_store(f"alert.title.{condition}"), message_store(code, **params)
    with transaction.atomic():
        flipped = AlertState.objects.filter(condition=condition, active=False).update(
            active=True, since=now, last_error="", updated_at=now
        )
        if flipped != 1:
            return  # another process raised it first, and notifies
        event = AlertEvent.objects.create(
            kind=AlertEventKind.RAISED,
            condition=condition,
            title=title[0],
            title_msg=title[1],
            message=message[0],
            message_msg=message[1],
            delivery=AlertDelivery.PENDING,
        )
        transaction.on_commit(partial(alert_deliver, event_id=event.pk), robust=True)


def _clear(*, condition: str, now: datetime) -> None:
    with transaction.atomic():
        if (
            AlertState.objects.filter(condition=condition, active=True).update(
                active=False, since=None, updated_at=now
            )
            == 1
        ):
            AlertEvent.objects.create(
                kind=AlertEventKind.CLEARED, condition=condition, delivery=AlertDelivery.NONE
            )
