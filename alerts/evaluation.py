"""Alerts: the conditions staff must hear about, and sending them through apprise.

A condition notifies once when it becomes true and again only after it has cleared: its
AlertState row is flipped by a conditional UPDATE, so two processes evaluating at once send once.
Evaluation runs after every replenishment run and on every reconcile pass. Notifications leave
after the commit that raised them; a failure to send is recorded and logged (never the URL,
which carries a bot token) and never raised into the caller.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

from accounts.crypto import Undecryptable
from accounts.models import Account, AccountStatus
from accounts.selectors import account_consumed_per_day
from accounts.tokens import mask, redact
from webhooks.models import (
    AlertCondition,
    AlertDelivery,
    AlertEvent,
    AlertEventKind,
    AlertSettings,
    AlertState,
    AttemptOutcome,
    FollowUpRound,
    ImportAttempt,
    NotificationTarget,
    ReplenishmentRun,
    RoundStatus,
    RunStatus,
    TeamStatus,
    TeamStatusChange,
)
from webhooks.selectors import consumed_last_week

logger = logging.getLogger(__name__)

# Apprise logs the full request URL, bot token included, at DEBUG: keep its logger above that
# whatever LOG_LEVEL is. (Its warnings name the service and the failure, not the URL.)
logging.getLogger("apprise").setLevel(logging.WARNING)

# Per destination, retries included: a chat service that hangs must not hold a worker for long.
SEND_TIMEOUT_SECONDS = 20
MAX_ERROR_CHARS = 2000

TITLES = {
    AlertCondition.LOW_STOCK: _("Spare-account pool: few accounts left"),
    AlertCondition.SHORT_RUNWAY: _("Spare-account pool: runs out in a few days"),
    AlertCondition.CONFIG_ERROR: _("Spare-account pool: the manager refused an import"),
    AlertCondition.UNKNOWN_OUTCOMES: _("Spare-account pool: imports keep failing"),
    AlertCondition.BANNED_TEAMS: _("Spare-account pool: imported Teams are being banned"),
}
MSG_LOW_STOCK = _(
    "Only %(available)s usable accounts are left in the pool (alert below %(threshold)s). "
    "Load more accounts: admin → Account pool → Accounts → Load accounts, or manage.py load_accounts."
)
MSG_SHORT_RUNWAY = _(
    "At the last 7 days' consumption (%(per_day)s accounts a day) the pool's %(available)s usable "
    "accounts last about %(days)s days (alert under %(threshold)s days). Load more accounts before they run out."
)
MSG_CONFIG_ERROR = _(
    "Replenishment run #%(run)s stopped: the manager refused the request (wrong key, wrong URL or a "
    "redirect). Its record says: “%(error)s”. Nothing was lost: the accounts went back to the pool. Fix MANAGER_BASE_URL or MANAGER_API_KEY "
    "(the key set in the manager under 库存预警 Webhook), restart the service, then push accounts "
    "again from the runs page."
)
MSG_UNKNOWN_OUTCOMES = _(
    "The last %(count)s imports all ended without an answer from the manager (timeout, dropped "
    "connection or server error). Check that the manager is up and reachable at MANAGER_BASE_URL. "
    "The accounts are not lost: they are re-sent automatically, and held for staff after repeated failures."
)
MSG_CONFIG_ERROR_ROUND = _(
    "Follow-up round #%(run)s stopped: the manager refused the Team-info request (wrong key, wrong URL "
    "or a redirect). Its record says: “%(error)s”. Fix MANAGER_BASE_URL or MANAGER_API_KEY, restart the "
    "service, then check the Teams again from the dashboard."
)
MSG_BANNED_TEAMS = _(
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
TITLE_TEST = _("Spare-account pool: test notification")
MSG_TEST = _(
    "Test notification sent by %(user)s from the spare-account pool's admin. If you read this, alerts reach you here."
)

MSG_NO_DESTINATION = _(
    "No notification destination is configured: add one under Replenishment → Notification "
    "destinations, or set NOTIFY_URLS."
)
MSG_URL_NOT_RECOGNISED = _(
    "Apprise does not recognise this URL: check its parts against the apprise documentation "
    "(tgram://, wecombot://, dingtalk://, feishu://, bark://, barks://, mailto://, mailtos://)."
)
MSG_SCHEME_NOT_ALLOWED = _(
    "Only these kinds of destination are accepted: tgram:// (Telegram), wecombot:// (WeCom bot), "
    "dingtalk:// (DingTalk), feishu:// (Feishu), bark:// or barks:// (Bark), mailto:// or mailtos:// (email)."
)
MSG_HOST_NOT_ALLOWED = _(
    "The host of this destination is a loopback, private, link-local, multicast, reserved or cloud metadata "
    "address: notifications are never sent there (NOTIFY_ALLOW_PRIVATE_HOSTS=1 allows it)."
)
MSG_HOST_UNKNOWN = _("The host name of this destination cannot be resolved.")
MSG_URL_UNDECRYPTABLE = _(
    "The stored URL cannot be decrypted with POOL_ENCRYPTION_KEY (was the key rotated?): enter it again."
)
MSG_NOT_DELIVERED = _("not delivered")
MSG_UNEXPECTED = _("unexpected error (%(kind)s)")


# --- URLs -----------------------------------------------------------------------------------


def notification_url_mask(*, url: str) -> str:
    """What may be shown of an apprise URL: its scheme and its last 4 characters."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return mask(url.strip())
    return f"{scheme[:16]}://{mask(rest)}"


# The kinds of destination the product documents. Anything else (json://, xml://, form://, …)
# could make the server send arbitrary requests to arbitrary places.
ALLOWED_SCHEMES = frozenset(
    {"tgram", "wecombot", "dingtalk", "feishu", "bark", "barks", "mailto", "mailtos"}
)
# These talk only to their service's fixed public API (apprise's constant, not a part of the URL).
FIXED_HOST_SCHEMES = frozenset({"tgram", "wecombot", "dingtalk", "feishu"})
# NAT64 wraps an IPv4 address: judged by the address it wraps.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _scheme(url: str) -> str:
    return url.strip().partition("://")[0].lower()


def _service_host(service) -> str | None:
    """The host a Bark or email destination connects to (a part of its URL); None for the
    fixed-host services."""
    if _scheme(service.url()) in FIXED_HOST_SCHEMES:
        return None
    return getattr(service, "smtp_host", None) or service.host or ""


def address_allowed(address: str) -> bool:
    """Whether a notification may be sent to this IP address: a public, unicast one."""
    ip = ipaddress.ip_address(
        address.split("%", 1)[0]
    )  # an IPv6 scope (fe80::1%eth0) is local anyway
    if ip.version == 6:
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
    )


def notification_host_problem(*, host: str | None, resolve: bool = True) -> str | None:
    """Why a notification must not go to `host` (a translatable message), or None.

    The name is resolved (unless `resolve` is false: then only an address written in the URL is
    judged) and every address it resolves to must be public: loopback, private, link-local
    (cloud metadata at 169.254.169.254), multicast and reserved ones are refused, unless
    NOTIFY_ALLOW_PRIVATE_HOSTS is set.
    """
    if host is None or settings.NOTIFY_ALLOW_PRIVATE_HOSTS:
        return None
    host = host.strip().strip("[]")
    if not host:
        return MSG_HOST_UNKNOWN
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        if not resolve:
            return None
        try:
            found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return MSG_HOST_UNKNOWN
        addresses = [info[4][0] for info in found]
    try:
        if addresses and all(address_allowed(address) for address in addresses):
            return None
    except ValueError:
        pass
    return MSG_HOST_NOT_ALLOWED if addresses else MSG_HOST_UNKNOWN


def _instantiate(url: str):
    """(apprise service or None, problem or None) for an allowed scheme; redirects never followed."""
    import apprise

    if _scheme(url) not in ALLOWED_SCHEMES:
        return None, MSG_SCHEME_NOT_ALLOWED
    service = apprise.Apprise.instantiate(url.strip(), asset=_asset())
    if service is None:
        return None, MSG_URL_NOT_RECOGNISED
    # A redirect could lead anywhere, the addresses checked here included: `?redirect=yes` in the
    # URL does not turn them back on.
    service.redirects = False
    return service, None


def notification_url_problem(*, url: str, resolve: bool = True) -> str | None:
    """Why this URL cannot be a destination (a translatable message), or None: its scheme is one
    the product documents, apprise can use it, and its host is not an internal address."""
    service, problem = _instantiate(url)
    if problem:
        return problem
    return notification_host_problem(host=_service_host(service), resolve=resolve)


def _asset():
    # Imported where used: apprise takes about half a second to load its plugins, which every web
    # process and command would otherwise pay at start-up.
    import apprise

    return apprise.AppriseAsset(service_timeout=SEND_TIMEOUT_SECONDS, http_redirects=False)


# --- Conditions -----------------------------------------------------------------------------


def alert_settings_get() -> AlertSettings:
    return AlertSettings.objects.get_or_create(pk=1)[0]


def _usable_available(*, limit: int) -> int:
    """Usable available accounts, counted up to `limit`: a bounded scan however big the pool.

    The same accounts as account_pool_summary()["available_usable"], exact below the limit.
    """
    return (
        Account.objects.filter(status=AccountStatus.AVAILABLE, usable=True)
        .order_by()[:limit]
        .count()
    )


def _pool_ever_loaded() -> bool:
    """Whether any account was ever loaded: until then the pool is not low, only empty, and a
    fresh install stays quiet (no alert, so no "no destination configured" warning either)."""
    return Account.objects.exists()


def _low_stock(config: AlertSettings, now: datetime) -> dict | None:
    threshold = config.stock_below
    if not threshold or not _pool_ever_loaded():
        return None
    available = _usable_available(limit=threshold)
    return {"available": available, "threshold": threshold} if available < threshold else None


def _short_runway(config: AlertSettings, now: datetime) -> dict | None:
    """dashboard_stats()["runway_days"] under the threshold, without counting the whole pool.

    The runway is under N days exactly when fewer than N × (accounts a day) are left, so counting
    stops there; below it the count, and so the runway, is exact.
    """
    threshold = config.runway_below_days
    if not threshold or not _pool_ever_loaded():
        return None
    # Eight days back: the last seven calendar days, whatever TIME_ZONE's offset from UTC.
    per_day = account_consumed_per_day(since=now - timedelta(days=8), until=now)
    last_week = consumed_last_week(per_day=per_day, today=timezone.localdate(now))
    if not last_week:
        return None  # no consumption: the runway is unknown, not short
    rate = last_week / 7
    available = _usable_available(limit=math.ceil(threshold * rate))
    runway = round(available / rate, 1)
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
    # A run that crashed or lost its worker says nothing about the configuration either way.
    run = (
        ReplenishmentRun.objects.filter(status__in=[RunStatus.FINISHED, RunStatus.CONFIG_ERROR])
        .order_by("-id")
        .values("pk", "status", "error", "finished_at")
        .first()
    )
    round_ = (
        FollowUpRound.objects.filter(status__in=[RoundStatus.FINISHED, RoundStatus.CONFIG_ERROR])
        .order_by("-id")
        .values("pk", "status", "error", "finished_at")
        .first()
    )
    last = max((r for r in (run, round_) if r), key=lambda r: r["finished_at"] or now, default=None)
    if last is None or last["status"] != RunStatus.CONFIG_ERROR:
        return None
    return {"run": last["pk"], "error": redact(last["error"])[:300], "round": last is round_}


def _unknown_outcomes(config: AlertSettings, now: datetime) -> dict | None:
    count = config.unknown_in_a_row
    if not count:
        return None
    latest = list(
        ImportAttempt.objects.filter(sent=True)
        .order_by("-id")
        .values_list("outcome", flat=True)[:count]
    )
    if len(latest) < count or any(outcome != AttemptOutcome.UNKNOWN for outcome in latest):
        return None
    return {"count": count}


def _banned_teams(config: AlertSettings, now: datetime) -> dict | None:
    threshold = config.banned_in_a_day
    if not threshold:
        return None
    count = TeamStatusChange.objects.filter(
        new_status=TeamStatus.BANNED, at__gte=now - timedelta(hours=24)
    ).count()
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
    template = MSG_CONFIG_ERROR_ROUND if params.get("round") else MESSAGES[condition]
    with translation.override(settings.LANGUAGE_CODE):
        title, message = str(TITLES[condition]), str(template % params)
    with transaction.atomic():
        flipped = AlertState.objects.filter(condition=condition, active=False).update(
            active=True, since=now, last_error="", updated_at=now
        )
        if flipped != 1:
            return  # another process raised it first, and notifies
        event = AlertEvent.objects.create(
            kind=AlertEventKind.RAISED,
            condition=condition,
            title=title,
            message=message,
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


def alert_send_test(*, by) -> AlertEvent:
    """Send a test notification to every destination now; the event says what came of it."""
    with translation.override(settings.LANGUAGE_CODE):
        title, message = str(TITLE_TEST), str(MSG_TEST % {"user": by.get_username()})
    with transaction.atomic():
        event = AlertEvent.objects.create(
            kind=AlertEventKind.TEST,
            title=title,
            message=message,
            delivery=AlertDelivery.PENDING,
            requested_by=by,
        )
        transaction.on_commit(partial(alert_deliver, event_id=event.pk), robust=True)
    event.refresh_from_db()
    return event


# --- Sending --------------------------------------------------------------------------------


@dataclass
class _Destination:
    name: str  # safe to show and log: masked
    url: str | None  # None when it cannot be used, and `problem` says why
    problem: str = ""


def _destinations() -> list[_Destination]:
    found = [
        _Destination(f"NOTIFY_URLS #{n} {notification_url_mask(url=url)}", url.strip())
        for n, url in enumerate(settings.NOTIFY_URLS, start=1)
        if url.strip()
    ]
    for target in NotificationTarget.objects.filter(enabled=True).defer("url"):
        # One at a time: a URL sealed with a key no longer configured must not hide the others.
        try:
            url = NotificationTarget.objects.values_list("url", flat=True).get(pk=target.pk)
        except NotificationTarget.DoesNotExist:
            continue  # deleted meanwhile
        if isinstance(url, Undecryptable):
            found.append(_Destination(str(target), None, str(MSG_URL_UNDECRYPTABLE)))
            continue
        found.append(_Destination(str(target), url))
    return found


def _send_one(destination: _Destination, *, title: str, body: str) -> str:
    """ "" when delivered, else a short class of failure (secret-free, and never the remote's answer:
    that would make the test button a way to probe what answers where)."""
    import apprise

    if destination.url is None:
        return destination.problem
    service, problem = _instantiate(destination.url)
    if problem:
        return str(problem)
    # Resolved again right before sending: the name may point elsewhere than when it was saved.
    problem = notification_host_problem(host=_service_host(service))
    if problem:
        return str(problem)
    notifier = apprise.Apprise(asset=_asset())
    notifier.add(service)
    with notifier.notify(body=body, title=title) as result:
        if result:
            return ""
    return str(MSG_NOT_DELIVERED)


def alert_deliver(*, event_id: int) -> None:
    """Send a pending alert event to every destination and record what came of it.

    Runs after the commit that created the event, outside any transaction, so the HTTP calls hold
    no lock. A destination that fails is recorded and logged, never raised.
    """
    event = AlertEvent.objects.filter(pk=event_id, delivery=AlertDelivery.PENDING).first()
    if event is None:
        return
    sent, failures = 0, []
    with translation.override(settings.LANGUAGE_CODE):
        try:
            destinations = _destinations()
            for destination in destinations:
                problem = _send_one(destination, title=event.title, body=event.message)
                if problem:
                    failures.append(f"{destination.name}: {problem}")
                else:
                    sent += 1
            if not destinations:
                failures.append(str(MSG_NO_DESTINATION))
        except Exception as exc:
            # The exception's text could hold a URL: only its type is kept.
            failures.append(str(MSG_UNEXPECTED % {"kind": type(exc).__name__}))
    error = "\n".join(failures)[:MAX_ERROR_CHARS]
    delivery = (
        AlertDelivery.FAILED
        if not sent
        else AlertDelivery.PARTIAL
        if failures
        else AlertDelivery.SENT
    )
    now = timezone.now()
    with transaction.atomic():
        recorded = AlertEvent.objects.filter(pk=event_id, delivery=AlertDelivery.PENDING).update(
            delivery=delivery, delivered_at=now, error=error
        )
        if recorded == 1 and event.condition:
            changes = {"last_error": error, "updated_at": now}
            if sent:
                changes["last_notified_at"] = now
            AlertState.objects.filter(condition=event.condition).update(**changes)
    if failures:
        logger.warning(
            "Alert #%s (%s) not delivered everywhere: %s",
            event_id,
            event.condition or event.kind,
            error,
        )
