"""Delivering alerts: a destination that fails is recorded, never raised, and never shown whole.

Transactional tests: notifications leave on commit, as they do in production.
"""

import pytest
from django.urls import reverse

from accounts.crypto import generate_key
from alerts import delivery
from alerts.destinations import notification_url_mask
from alerts.models import AlertCondition, AlertDelivery, AlertEvent, NotificationTarget
from tests.factories import AccountFactory
from tests.support.alerts import (
    RAISED,
    closed_port,
    emptied_pool,
    evaluate,
    run_now,
    state,
    thresholds,
)
from tests.support.notify import Receiver
from webhooks.models import RunStatus

# The messages are compared with their English text.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("notifications_in_english"),
]


def test_a_broken_destination_is_recorded_and_the_run_goes_on(receiver, manager, settings, caplog):
    down = f"bark://127.0.0.1:{closed_port()}/down"
    settings.NOTIFY_URLS = [receiver.url(), down]
    with Receiver(status=500) as refusing:
        refusing_url = refusing.url(credentials="ops:pa55word-of-the-bot@")
        NotificationTarget.objects.create(
            label="ops chat",
            url=refusing_url,
            masked_url=notification_url_mask(url=refusing_url),
        )
        thresholds(config_error=True)
        AccountFactory()
        manager.plan(["unauthorized"])
        run = run_now()
        assert len(refusing.posts) == 1

    assert run.status == RunStatus.CONFIG_ERROR and run.finished_at is not None
    assert len(receiver.posts) == 1
    event = AlertEvent.objects.get(kind=RAISED)
    assert event.delivery == AlertDelivery.PARTIAL
    assert "NOTIFY_URLS #2 bark://…down" in event.error and "ops chat (bark://…hook)" in event.error
    # A short class of failure, never the remote's answer.
    assert event.error.count(str(delivery.MSG_NOT_DELIVERED)) == 2 and "500" not in event.error
    config = state(AlertCondition.CONFIG_ERROR)
    assert config.last_error == event.error and config.last_notified_at is not None
    for text in (event.error, caplog.text):
        assert "pa55word-of-the-bot" not in text and down not in text
    assert (
        "not delivered everywhere" in caplog.text and "NOTIFY_URLS #2 bark://…down" in caplog.text
    )


def test_when_nothing_is_delivered_the_alert_stays_raised_and_says_why(settings):
    settings.NOTIFY_URLS = [f"bark://127.0.0.1:{closed_port()}/down"]
    thresholds(stock_below=1)
    emptied_pool()
    evaluate()
    low = state(AlertCondition.LOW_STOCK)
    assert low.active and low.last_notified_at is None and "NOTIFY_URLS #1" in low.last_error
    assert AlertEvent.objects.get().delivery == AlertDelivery.FAILED

    settings.NOTIFY_URLS = []
    thresholds(stock_below=0)
    evaluate()
    thresholds(stock_below=1)
    evaluate()
    assert AlertEvent.objects.first().error == str(delivery.MSG_NO_DESTINATION)


def test_a_url_sealed_with_a_key_no_longer_configured_does_not_hide_the_others(
    receiver, settings, admin_client
):
    NotificationTarget.objects.create(
        label="old", url="bark://127.0.0.1:1/old", masked_url="bark://…/old"
    )
    settings.POOL_ENCRYPTION_KEY = generate_key()
    thresholds(stock_below=1)
    emptied_pool()
    evaluate()
    assert len(receiver.posts) == 1
    assert str(delivery.MSG_URL_UNDECRYPTABLE) in state(AlertCondition.LOW_STOCK).last_error
    assert (
        admin_client.get(reverse("admin:alerts_notificationtarget_changelist")).status_code == 200
    )
