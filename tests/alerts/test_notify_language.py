"""Notifications go out in NOTIFY_LANGUAGE: 简体中文 unless set to en, whatever language the
process that raises them happens to be in (a web request, the worker, a command)."""

import pytest
from django.utils import timezone, translation

from alerts.evaluation import alert_evaluate
from alerts.models import AlertSettings
from tests.factories import AccountFactory
from tests.support.notify import Receiver

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("language", "title", "body_starts"),
    [
        (None, "账号池：账号所剩不多", "账号池中仅剩 2 个有效账号"),
        ("en", "Spare-account pool: few accounts left", "Only 2 usable accounts are left"),
    ],
)
def test_a_delivered_notification_is_in_notify_language(settings, language, title, body_starts):
    settings.NOTIFY_ALLOW_PRIVATE_HOSTS = True  # the receiver is on loopback
    if language is not None:
        settings.NOTIFY_LANGUAGE = language
    AlertSettings.objects.update_or_create(
        pk=1,
        defaults={
            "stock_below": 3,
            "runway_below_days": 0,
            "config_error": False,
            "unknown_in_a_row": 0,
        },
    )
    AccountFactory.create_batch(2)
    with Receiver() as receiver:
        settings.NOTIFY_URLS = [receiver.url()]
        # The raising process speaks the other language: the setting wins.
        with translation.override("zh-hans" if language == "en" else "en"):
            alert_evaluate(now=timezone.now())
    assert receiver.titles == [title]
    assert receiver.posts[0]["body"].startswith(body_starts)
