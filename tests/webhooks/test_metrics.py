"""GET /metrics: Prometheus reads the pool, only with the bearer token, and only when it is set."""

import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import AccountStatus, UnusableReason
from alerts.models import AlertCondition, AlertState
from tests.factories import AccountFactory
from webhooks.models import (
    AttemptOutcome,
    EventStatus,
    ImportAttempt,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    WebhookEvent,
)

pytestmark = pytest.mark.django_db

URL = reverse("metrics")
TOKEN = "s3cret-metrics-token-" + "x" * 20


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client, token=TOKEN):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_are_off_unless_a_token_is_set(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get(URL).status_code == 404
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer anything").status_code == 404


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"],
)
def test_metrics_refuse_a_missing_or_wrong_token(client, token, header):
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = client.get(URL, **extra)
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert b"pool_" not in response.content


def test_a_scrape_reads_the_pool_runs_attempts_alerts_and_refusals(client, token):
    now = timezone.now()
    usable = AccountFactory.create_batch(3)
    AccountFactory(usable=False, unusable_reason=UnusableReason.UNKNOWN_OUTCOMES)
    AccountFactory(usable=False, unusable_reason=UnusableReason.AT_EXPIRED)
    AccountFactory(
        status=AccountStatus.RESERVED,
        lease_id=uuid.uuid4(),
        lease_expires_at=now + timedelta(minutes=5),
    )
    consumed = AccountFactory(status=AccountStatus.CONSUMED, consumed_at=now - timedelta(hours=1))
    run = ReplenishmentRun.objects.create(trigger=RunTrigger.WEBHOOK, status=RunStatus.FINISHED)
    ReplenishmentRun.objects.create(trigger=RunTrigger.WEBHOOK, status=RunStatus.CONFIG_ERROR)
    confirmed = ImportAttempt.objects.create(
        account=consumed, run=run, outcome=AttemptOutcome.CONSUMED, http_status=200
    )
    ImportAttempt.objects.create(
        account=usable[0], run=run, outcome=AttemptOutcome.REJECTED, http_status=400
    )
    old = ImportAttempt.objects.create(account=usable[1], run=run, outcome=AttemptOutcome.REJECTED)
    ImportAttempt.objects.filter(pk=old.pk).update(
        created_at=now - timedelta(days=2)
    )  # outside the 24 h
    WebhookEvent.objects.create(
        status=EventStatus.REFUSED, key_ok=False, refusal="wrong key", calls=12
    )
    AlertState.objects.create(condition=AlertCondition.CONFIG_ERROR, active=True, since=now)

    samples = scrape(client)

    assert samples[("pool_accounts", (("state", "available"),))] == 5
    assert samples[("pool_accounts", (("state", "reserved"),))] == 1
    assert samples[("pool_accounts", (("state", "consumed"),))] == 1
    assert samples[("pool_usable_accounts", ())] == 3
    assert (
        samples[("pool_unusable_accounts", (("kind", "held"), ("reason", "unknown_outcomes")))] == 1
    )
    assert samples[("pool_unusable_accounts", (("kind", "flagged"), ("reason", "at_expired")))] == 1
    assert samples[("pool_seats_in_stock", ())] == 15
    assert samples[("pool_runway_days", ())] == 21.0  # 3 usable at 1 a week
    assert samples[("pool_replenishment_runs", (("status", "finished"),))] == 1
    assert samples[("pool_replenishment_runs", (("status", "config_error"),))] == 1
    assert samples[("pool_replenishment_runs", (("status", "queued"),))] == 0
    assert samples[("pool_import_attempts_24h", (("outcome", "consumed"),))] == 1
    assert samples[("pool_import_attempts_24h", (("outcome", "rejected"),))] == 1
    assert samples[("pool_webhook_refused_calls_last_hour", ())] == 12
    assert samples[("pool_alert_active", (("condition", "config_error"),))] == 1
    assert samples[("pool_alert_active", (("condition", "low_stock"),))] == 0
    confirmed.refresh_from_db()
    assert samples[("pool_last_confirmed_import_timestamp_seconds", ())] == pytest.approx(
        confirmed.created_at.timestamp()
    )


def test_a_fresh_install_scrapes_without_runway_or_last_import(
    client, token, django_assert_max_num_queries
):
    with django_assert_max_num_queries(15):
        samples = scrape(client)
    assert samples[("pool_usable_accounts", ())] == 0
    assert not any(
        name in ("pool_runway_days", "pool_last_confirmed_import_timestamp_seconds")
        for name, _ in samples
    )
