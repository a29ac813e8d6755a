"""Consumption per day: a rollup counted with each consumption, read by every figure that needs it."""

import importlib
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import services
from accounts.models import Account, AccountStatus, ConsumptionDay
from accounts.selectors import account_consumed_per_day
from alerts import evaluation
from alerts.models import AlertSettings
from tests.factories import AccountFactory
from webhooks.selectors import dashboard_stats

pytestmark = pytest.mark.django_db

UTC = ZoneInfo("UTC")


def settle_consumed(account, now):
    lease = uuid.uuid4()
    Account.objects.filter(pk=account.pk).update(
        status=AccountStatus.RESERVED, lease_id=lease, lease_expires_at=now
    )
    return services.account_settle_consumed(account_id=account.pk, lease_id=lease, now=now)


def test_each_consumption_is_counted_once_in_its_local_day(settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    late_utc = datetime(2026, 11, 28, 16, 30, tzinfo=UTC)  # 00:30 on the 29th in Shanghai
    first, second = AccountFactory.create_batch(2)
    assert settle_consumed(first, late_utc) and settle_consumed(second, late_utc)
    assert not services.account_settle_consumed(
        account_id=first.pk, lease_id=uuid.uuid4(), now=late_utc
    )
    assert dict(ConsumptionDay.objects.values_list("day", "consumed")) == {
        datetime(2026, 11, 29).date(): 2
    }


def test_the_dashboard_the_stats_and_the_alerts_read_the_rollup_not_the_accounts():
    now = timezone.now()
    for account in AccountFactory.create_batch(3):
        settle_consumed(account, now - timedelta(days=1))
    with CaptureQueriesContext(connection) as queries:
        stats = dashboard_stats(now=now)
        evaluation._short_runway(AlertSettings(runway_below_days=30), now)
    assert not [q["sql"] for q in queries.captured_queries if "consumed_at" in q["sql"]]
    assert stats["consumption_per_day"][-2] == {
        "day": timezone.localdate(now) - timedelta(days=1),
        "consumed": 3,
    }
    assert stats["consumed_last_7_days"] == 3


def test_the_migration_builds_the_rollup_from_the_accounts_already_consumed(settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    day_one = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 11:00 local on the 1st
    late = datetime(2026, 5, 1, 17, 0, tzinfo=UTC)  # 01:00 local on the 2nd
    accounts = AccountFactory.create_batch(3)
    for account, at in zip(accounts, (day_one, day_one, late)):
        Account.objects.filter(pk=account.pk).update(status=AccountStatus.CONSUMED, consumed_at=at)
    AccountFactory()  # available: not counted
    ConsumptionDay.objects.create(
        day=datetime(2020, 1, 1).date(), consumed=9
    )  # rebuilt from scratch

    migration = importlib.import_module("accounts.migrations.0011_consumption_per_day")
    migration.build_rollup(apps, None)

    per_day = account_consumed_per_day(since=day_one - timedelta(days=1), until=late)
    assert per_day == {datetime(2026, 5, 1).date(): 2, datetime(2026, 5, 2).date(): 1}
    assert ConsumptionDay.objects.count() == 2
