"""Alert conditions, each raised once per episode and cleared, delivered over real HTTP to a
loopback receiver (apprise's bark://).

Transactional tests: notifications leave on commit, as they do in production.
"""

import threading
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import Account, AccountStatus, UnusableReason
from alerts import delivery, evaluation
from alerts.models import AlertCondition, AlertDelivery, AlertEvent, AlertState
from tests.factories import AccountFactory
from tests.support.alerts import (
    CLEARED,
    RAISED,
    SENT,
    emptied_pool,
    evaluate,
    history,
    run_now,
    state,
    thresholds,
)
from webhooks import services
from webhooks.models import RunStatus
from webhooks.selectors import dashboard_stats

# The messages are compared with their English text.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("notifications_in_english"),
]


def test_a_fresh_install_raises_no_stock_alert_and_warns_of_no_destination(settings, caplog):
    settings.NOTIFY_URLS = []
    thresholds(stock_below=10, runway_below_days=3)
    evaluate()
    assert not AlertState.objects.filter(active=True).exists()
    assert not AlertEvent.objects.exists()
    assert str(delivery.MSG_NO_DESTINATION) not in caplog.text

    emptied_pool()
    evaluate()
    assert state(AlertCondition.LOW_STOCK).active
    assert str(delivery.MSG_NO_DESTINATION) in caplog.text


def test_low_stock_notifies_once_and_again_only_after_clearing(receiver):
    thresholds(stock_below=3)
    AccountFactory.create_batch(2)
    AccountFactory(usable=False, unusable_reason=UnusableReason.AT_EXPIRED)  # not stock
    evaluate()
    evaluate()
    assert receiver.titles == [str(evaluation.TITLES[AlertCondition.LOW_STOCK])]
    assert receiver.posts[0]["body"] == str(
        evaluation.MSG_LOW_STOCK % {"available": 2, "threshold": 3}
    )
    low = state(AlertCondition.LOW_STOCK)
    assert low.active and low.since and low.last_notified_at and low.last_error == ""

    refill = AccountFactory.create_batch(2)
    evaluate()
    assert not state(AlertCondition.LOW_STOCK).active and len(receiver.posts) == 1
    evaluate()
    assert len(receiver.posts) == 1

    Account.objects.filter(pk__in=[a.pk for a in refill]).update(status=AccountStatus.RETIRED)
    evaluate()
    evaluate()
    assert len(receiver.posts) == 2
    assert history() == [
        (RAISED, AlertCondition.LOW_STOCK, SENT),
        (CLEARED, AlertCondition.LOW_STOCK, AlertDelivery.NONE),
        (RAISED, AlertCondition.LOW_STOCK, SENT),
    ]


def test_short_runway_fires_when_the_dashboard_runway_is_under_the_threshold(receiver):
    thresholds(runway_below_days=3)
    AccountFactory.create_batch(5)
    evaluate()
    assert receiver.posts == []  # nothing consumed yet: the runway is unknown, not short

    now = timezone.now()
    for n in range(14):  # 2 a day over the last 7 days
        AccountFactory(status=AccountStatus.CONSUMED, consumed_at=now - timedelta(hours=5 * n))
    evaluate()
    assert dashboard_stats(now=timezone.now())["runway_days"] == 2.5
    assert receiver.titles == [str(evaluation.TITLES[AlertCondition.SHORT_RUNWAY])]
    expected = evaluation.MSG_SHORT_RUNWAY % {
        "per_day": "2.0",
        "available": 5,
        "days": 2.5,
        "threshold": 3,
    }
    assert receiver.posts[0]["body"] == str(expected)

    AccountFactory()  # 6 left at 2 a day: 3.0 days, no longer under 3
    evaluate()
    assert dashboard_stats(now=timezone.now())["runway_days"] == 3.0
    assert not state(AlertCondition.SHORT_RUNWAY).active and len(receiver.posts) == 1


def test_short_runway_counts_days_in_the_local_time_zone_as_the_dashboard_does(receiver, settings):
    """It used to take UTC's date for today: just after local midnight east of UTC, today's
    consumption was left out and the alert disagreed with the dashboard."""
    settings.TIME_ZONE = "Asia/Shanghai"
    thresholds(runway_below_days=7)
    AccountFactory.create_batch(5)
    just_after_midnight = (
        timezone.now()
        .astimezone(ZoneInfo("Asia/Shanghai"))
        .replace(hour=0, minute=30, second=0, microsecond=0)
    ).astimezone(ZoneInfo("UTC"))  # 16:30 UTC the day before, as timezone.now() gives it
    consumed_at = just_after_midnight - timedelta(minutes=20)  # 00:10 local: today, not UTC's today
    AccountFactory.create_batch(7, status=AccountStatus.CONSUMED, consumed_at=consumed_at)

    evaluation.alert_evaluate(now=just_after_midnight)

    assert dashboard_stats(now=just_after_midnight)["runway_days"] == 5.0
    assert receiver.titles == [str(evaluation.TITLES[AlertCondition.SHORT_RUNWAY])]


def test_a_configuration_error_notifies_once_until_a_run_goes_through(receiver, manager):
    thresholds(config_error=True)
    AccountFactory.create_batch(6)
    manager.plan(["unauthorized", "unauthorized"])
    stopped = run_now()
    assert stopped.status == RunStatus.CONFIG_ERROR
    assert run_now().status == RunStatus.CONFIG_ERROR
    assert receiver.titles == [str(evaluation.TITLES[AlertCondition.CONFIG_ERROR])]
    assert f"#{stopped.pk} " in receiver.posts[0]["body"] and "401" in receiver.posts[0]["body"]

    assert run_now().status == RunStatus.FINISHED
    assert not state(AlertCondition.CONFIG_ERROR).active and len(receiver.posts) == 1

    manager.plan(["unauthorized"])
    run_now()
    assert len(receiver.posts) == 2


def test_unknown_outcomes_in_a_row_notify_once(receiver, manager):
    thresholds(unknown_in_a_row=2)
    AccountFactory.create_batch(8)
    manager.plan(["http500", "ok"])
    run_now()
    assert receiver.posts == []  # the latest of the two is confirmed

    manager.plan(["http500", "http500", "http500", "http500"])
    run_now()
    run_now()
    assert receiver.titles == [str(evaluation.TITLES[AlertCondition.UNKNOWN_OUTCOMES])]
    assert receiver.posts[0]["body"] == str(evaluation.MSG_UNKNOWN_OUTCOMES % {"count": 2})

    run_now()  # the manager answers again
    assert not state(AlertCondition.UNKNOWN_OUTCOMES).active and len(receiver.posts) == 1


def test_a_threshold_of_zero_turns_its_alert_off_and_clears_it(receiver):
    thresholds(stock_below=1)
    emptied_pool()
    evaluate()
    assert state(AlertCondition.LOW_STOCK).active
    thresholds()
    evaluate()
    assert not AlertState.objects.filter(active=True).exists()
    assert len(receiver.posts) == 1


def test_every_reconcile_pass_evaluates(receiver):
    thresholds(stock_below=1)
    emptied_pool()
    services.reconcile(now=timezone.now())
    services.reconcile(now=timezone.now())
    assert receiver.titles == [str(evaluation.TITLES[AlertCondition.LOW_STOCK])]


def test_two_processes_evaluating_at_once_send_once(receiver):
    thresholds(stock_below=1, unknown_in_a_row=0)
    emptied_pool()
    start = threading.Barrier(4)
    errors = []

    def evaluate_in_a_thread():
        try:
            start.wait()
            evaluate()
        except Exception as exc:  # surfaced below: a thread's exception would otherwise be lost
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate_in_a_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(receiver.posts) == 1
    assert history() == [(RAISED, AlertCondition.LOW_STOCK, SENT)]
