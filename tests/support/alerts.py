"""Shared by the alert tests: thresholds, and short ways to raise alerts (the receiver is
tests/support/notify.py)."""

import socket

from django.urls import reverse
from django.utils import timezone

from accounts.models import AccountStatus
from alerts.evaluation import alert_evaluate
from alerts.models import AlertDelivery, AlertEvent, AlertEventKind, AlertSettings, AlertState
from tests.factories import AccountFactory
from webhooks import services
from webhooks.models import ReplenishmentRun, RunStatus


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def thresholds(**values):
    """Every alert off except the ones named."""
    off = {"stock_below": 0, "runway_below_days": 0, "config_error": False, "unknown_in_a_row": 0}
    AlertSettings.objects.update_or_create(pk=1, defaults={**off, **values})


def emptied_pool():
    """A pool that had accounts and has no usable one left: low stock (an install that never
    loaded any stays quiet)."""
    AccountFactory(status=AccountStatus.RETIRED)


def evaluate():
    alert_evaluate(now=timezone.now())


def run_now():
    """One webhook event and the run it wakes, carried out here against the fake manager."""
    services.event_receive(
        current_seats=9, threshold=10, message="", payload="{}", remote_addr=None
    )
    return services.run_execute(run_id=ReplenishmentRun.objects.get(status=RunStatus.QUEUED).pk)


def state(condition) -> AlertState:
    return AlertState.objects.get(condition=condition)


def history() -> list[tuple[str, str, str]]:
    return list(AlertEvent.objects.order_by("id").values_list("kind", "condition", "delivery"))


RAISED, CLEARED = AlertEventKind.RAISED, AlertEventKind.CLEARED
SENT = AlertDelivery.SENT

BOT_TOKEN = "123456789:AAEhBOweik6ad9r_QXMENQjcrGbqCr4K-bs"


def add_destination(client, url):
    return client.post(
        reverse("admin:alerts_notificationtarget_add"),
        {"label": "x", "new_url": url, "enabled": "on"},
    )
