"""Sending alerts through apprise: to every destination, after the commit that raised them.

A failure to send is recorded on the alert and logged (never the URL, which carries a bot token)
and never raised into the caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from accounts.crypto import Undecryptable
from alerts.destinations import (
    notification_asset,
    notification_host_problem,
    notification_service,
    notification_service_host,
    notification_url_mask,
)
from alerts.models import AlertDelivery, AlertEvent, AlertEventKind, AlertState, NotificationTarget
from poolsite.messages import message_define, message_render, message_store

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000

TITLE_TEST = message_define(
    "alert.title.test", gettext_noop("Spare-account pool: test notification")
)
MSG_TEST = message_define(
    "alert.test",
    gettext_noop(
        "Test notification sent by %(user)s from the spare-account pool's admin. If you read this, alerts reach you here."
    ),
)

MSG_NO_DESTINATION = _(
    "No notification destination is configured: add one under Alerts → Notification "
    "destinations, or set NOTIFY_URLS."
)
MSG_URL_UNDECRYPTABLE = _(
    "The stored URL cannot be decrypted with POOL_ENCRYPTION_KEY (was the key rotated?): enter it again."
)
MSG_NOT_DELIVERED = _("not delivered")
MSG_UNEXPECTED = _("unexpected error (%(kind)s)")


def alert_send_test(*, by) -> AlertEvent:
    """Send a test notification to every destination now; the event says what came of it."""
    title = message_store("alert.title.test")
    message = message_store("alert.test", user=by.get_username())
    with transaction.atomic():
        event = AlertEvent.objects.create(
            kind=AlertEventKind.TEST,
            title=title[0],
            title_msg=title[1],
            message=message[0],
            message_msg=message[1],
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
    service, problem = notification_service(destination.url)
    if problem:
        return str(problem)
    # Resolved again right before sending: the name may point elsewhere than when it was saved.
    problem = notification_host_problem(host=notification_service_host(service))
    if problem:
        return str(problem)
    notifier = apprise.Apprise(asset=notification_asset())
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
    # In NOTIFY_LANGUAGE, whatever the language of the process that raised it (a request, the
    # worker, a command): rendered from the stored codes now.
    with translation.override(settings.NOTIFY_LANGUAGE):
        title = message_render(event.title_msg, event.title)
        body = message_render(event.message_msg, event.message)
        try:
            destinations = _destinations()
            for destination in destinations:
                problem = _send_one(destination, title=title, body=body)
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
