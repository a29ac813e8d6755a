"""/api/stats/, /api/events/, /api/runs/, /api/attempts/ and the push, with the fake manager over real HTTP."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import AccountStatus, UnusableReason
from apitokens.services import api_token_create
from tests.factories import AccountFactory
from tests.support.api import post_json
from tests.support.secrets import assert_no_secret, secrets_of
from webhooks import api, services
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

STATS_URL = reverse("api-stats")
EVENTS_URL = reverse("api-event-list")
RUNS_URL = reverse("api-run-list")
ATTEMPTS_URL = reverse("api-attempt-list")
PUSH_URL = reverse("api-run-push")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ids(client, url, **params):
    response = client.get(url, params)
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def webhook_run(manager, behaviours, *, current_seats, message=""):
    """An accepted event and the run it wakes, carried out against the fake manager."""
    manager.plan(behaviours)
    event = services.event_receive(
        current_seats=current_seats,
        threshold=10,
        message=message,
        payload="{}",
        remote_addr="127.0.0.1",
    )
    return event, services.run_execute(
        run_id=ReplenishmentRun.objects.get(status=RunStatus.QUEUED).pk
    )


# --- Stats -------------------------------------------------------------------------------------


def test_stats_are_the_dashboard_figures(admin_client):
    AccountFactory.create_batch(2)
    AccountFactory(usable=False, unusable_reason=UnusableReason.AT_EXPIRED)
    AccountFactory(status=AccountStatus.CONSUMED, consumed_at=timezone.now())
    response = admin_client.get(STATS_URL)
    assert response.status_code == 200
    body = response.json()
    assert body["counts"] == {
        "available": 3,
        "reserved": 0,
        "consumed": 1,
        "rejected": 0,
        "retired": 0,
    }
    assert (
        body["available_usable"],
        body["available_flagged_unusable"],
        body["seats_in_stock"],
    ) == (2, 1, 10)
    assert body["consumption_per_day"][-1] == {
        "day": timezone.now().date().isoformat(),
        "consumed": 1,
    }
    assert (body["consumed_last_7_days"], body["runway_days"]) == (1, 14.0)
    # The answer is passed through as dashboard_stats returns it: document every figure it adds.
    assert set(body) == set(api.StatsSerializer().fields)


def test_stats_need_what_the_dashboard_figures_need(client, client_with):
    assert client.get(STATS_URL).status_code in (401, 403)
    assert client_with(staff=False).get(STATS_URL).status_code == 403
    assert client_with("accounts.view_account", staff=False).get(STATS_URL).status_code == 403
    # A staff member whom the dashboard shows no pool figures gets none here either.
    assert client_with().get(STATS_URL).status_code == 403
    assert client_with("webhooks.view_webhookevent").get(STATS_URL).status_code == 403
    assert client_with("accounts.view_account").get(STATS_URL).status_code == 200


# --- History -----------------------------------------------------------------------------------


def test_events_list_filter_and_redact(admin_client, manager):
    at, st = AccountFactory(), AccountFactory()
    acted, run = webhook_run(
        manager, ["ok"], current_seats=9, message=f"库存不足 {at.access_token}"
    )
    refused = services.event_refuse(
        reason="Missing or wrong X-API-Key.", key_ok=False, payload="", remote_addr=None
    )
    queued = services.event_receive(
        current_seats=1,
        threshold=10,
        message="",
        payload=json.dumps({"x": st.session_token}),
        remote_addr=None,
    )
    WebhookEvent.objects.filter(pk=acted.pk).update(received_at=T0)
    WebhookEvent.objects.filter(pk=refused.pk).update(received_at=T0 + timedelta(hours=1))
    WebhookEvent.objects.filter(pk=queued.pk).update(received_at=T0 + timedelta(hours=2))

    assert ids(admin_client, EVENTS_URL) == [queued.pk, refused.pk, acted.pk]
    assert ids(admin_client, EVENTS_URL, status="refused") == [refused.pk]
    assert ids(admin_client, EVENTS_URL, key_ok="true") == [queued.pk, acted.pk]
    assert ids(admin_client, EVENTS_URL, since=(T0 + timedelta(hours=1)).isoformat()) == [
        queued.pk,
        refused.pk,
    ]
    assert ids(admin_client, EVENTS_URL, until=(T0 + timedelta(hours=1)).isoformat()) == [acted.pk]
    assert ids(
        admin_client, EVENTS_URL, since="2026-03-01T12:30:00Z", until="2026-03-01T13:30:00Z"
    ) == [refused.pk]

    detail = admin_client.get(reverse("api-event-detail", args=[acted.pk]))
    row = detail.json()
    assert (row["status"], row["run"], row["current_seats"], row["threshold"]) == (
        EventStatus.ACTED_ON,
        run.pk,
        9,
        10,
    )
    assert row["message"].startswith("库存不足 [redacted]")
    page = admin_client.get(EVENTS_URL).content.decode()
    assert_no_secret(page + detail.content.decode(), *secrets_of(at, st))


def test_runs_list_and_filter(admin_client, admin_user, manager):
    AccountFactory.create_batch(3)
    _, webhook = webhook_run(manager, ["ok"], current_seats=9)
    manual = services.run_wake(
        trigger=RunTrigger.MANUAL, requested_accounts=2, requested_by=admin_user
    )
    assert ids(admin_client, RUNS_URL) == [manual.pk, webhook.pk]
    assert ids(admin_client, RUNS_URL, status="finished") == [webhook.pk]
    assert ids(admin_client, RUNS_URL, trigger="manual") == [manual.pk]
    ReplenishmentRun.objects.filter(pk=webhook.pk).update(created_at=T0)
    assert ids(admin_client, RUNS_URL, until=(T0 + timedelta(seconds=1)).isoformat()) == [
        webhook.pk
    ]
    assert ids(admin_client, RUNS_URL, since=(T0 + timedelta(seconds=1)).isoformat()) == [manual.pk]
    row = admin_client.get(reverse("api-run-detail", args=[webhook.pk])).json()
    assert (row["status"], row["need"], row["consumed"]) == ("finished", 2, 2)
    assert "ceil((10 + 5 - 9) / 5)" in row["need_explained"]
    assert (
        admin_client.get(reverse("api-run-detail", args=[manual.pk])).json()["requested_by"]
        == "admin"
    )


def test_attempts_list_filter_and_page_newest_first(admin_client, manager):
    first = AccountFactory(email="carol@example.com")
    second = AccountFactory(email="dave@example.com")
    third = AccountFactory(email="carl@example.org")
    _, run = webhook_run(manager, ["ok", "http500", "reject"], current_seats=0)  # asks for 3
    by_account = {a.account_id: a for a in ImportAttempt.objects.filter(run=run)}
    ok, unknown, rejected = by_account[first.pk], by_account[second.pk], by_account[third.pk]
    assert (ok.outcome, unknown.outcome, rejected.outcome) == ("consumed", "unknown", "rejected")
    for n, attempt in enumerate((ok, unknown, rejected)):
        ImportAttempt.objects.filter(pk=attempt.pk).update(created_at=T0 + timedelta(minutes=n))

    assert ids(admin_client, ATTEMPTS_URL) == [rejected.pk, unknown.pk, ok.pk]
    assert ids(admin_client, ATTEMPTS_URL, outcome="unknown") == [unknown.pk]
    assert ids(admin_client, ATTEMPTS_URL, email=" CAR") == [rejected.pk, ok.pk]
    assert ids(admin_client, ATTEMPTS_URL, email="car", outcome="consumed") == [ok.pk]
    assert ids(admin_client, ATTEMPTS_URL, account=second.pk) == [unknown.pk]
    assert ids(admin_client, ATTEMPTS_URL, run=run.pk, mode="single", sent="true") == [
        rejected.pk,
        unknown.pk,
        ok.pk,
    ]
    assert ids(admin_client, ATTEMPTS_URL, run=run.pk + 1) == []
    assert ids(admin_client, ATTEMPTS_URL, since=(T0 + timedelta(minutes=1)).isoformat()) == [
        rejected.pk,
        unknown.pk,
    ]
    assert ids(admin_client, ATTEMPTS_URL, until=(T0 + timedelta(minutes=1)).isoformat()) == [ok.pk]

    pages, url, params = [], ATTEMPTS_URL, {"page_size": 2}
    while url:
        body = admin_client.get(url, params).json()
        assert "count" not in body
        pages.append([row["id"] for row in body["results"]])
        url, params = body["next"], None
    assert pages == [[rejected.pk, unknown.pk], [ok.pk]]

    row = admin_client.get(reverse("api-attempt-detail", args=[ok.pk])).json()
    assert (
        row["account"],
        row["account_email"],
        row["run"],
        row["http_status"],
        row["outcome"],
    ) == (
        first.pk,
        "carol@example.com",
        run.pk,
        200,
        AttemptOutcome.CONSUMED,
    )


def test_cursor_pages_keep_rows_that_share_a_time(admin_client):
    events = [
        # One address each: refusals from one address within a minute are folded into one row.
        services.event_refuse(
            reason="Missing or wrong X-API-Key.",
            key_ok=False,
            payload="",
            remote_addr=f"127.0.0.{n}",
        )
        for n in range(1, 6)
    ]
    WebhookEvent.objects.update(received_at=T0)
    seen, url, params = [], EVENTS_URL, {"page_size": 2}
    while url:
        body = admin_client.get(url, params).json()
        seen += [row["id"] for row in body["results"]]
        url, params = body["next"], None
    assert sorted(seen) == sorted(e.pk for e in events) and len(seen) == 5


@pytest.mark.parametrize(
    "url, params",
    [
        (EVENTS_URL, {"since": "yesterday"}),
        (EVENTS_URL, {"status": "lost"}),
        (RUNS_URL, {"trigger": "cron"}),
        (ATTEMPTS_URL, {"outcome": "maybe"}),
        (ATTEMPTS_URL, {"account": "x"}),
        (ATTEMPTS_URL, {"until": "2026-13-01"}),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(admin_client, url, params):
    response = admin_client.get(url, params)
    assert response.status_code == 400 and set(response.json()) == set(params)


@pytest.mark.parametrize(
    "url, perm",
    [
        (EVENTS_URL, "webhooks.view_webhookevent"),
        (RUNS_URL, "webhooks.view_replenishmentrun"),
        (ATTEMPTS_URL, "webhooks.view_importattempt"),
    ],
)
def test_history_needs_staff_with_the_view_permission(client, client_with, url, perm):
    assert client.get(url).status_code in (401, 403)
    assert client_with(perm, staff=False).get(url).status_code == 403
    assert client_with().get(url).status_code == 403
    assert client_with(perm).get(url).status_code == 200


# --- Push --------------------------------------------------------------------------------------


def test_push_queues_a_manual_run(admin_client, admin_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_json(admin_client, PUSH_URL, {"accounts": 3})
    assert response.status_code == 202
    run = ReplenishmentRun.objects.get()
    assert response.json() == {"run": run.pk, "requested_accounts": 3}
    assert (run.trigger, run.status, run.requested_accounts, run.requested_by) == (
        RunTrigger.MANUAL,
        RunStatus.QUEUED,
        3,
        admin_user,
    )
    assert len(callbacks) == 1


def test_push_adds_to_a_run_already_queued(admin_client):
    queued = services.run_wake(trigger=RunTrigger.WEBHOOK)
    response = post_json(admin_client, PUSH_URL, {"accounts": 2})
    assert response.status_code == 202
    assert response.json() == {"run": queued.pk, "requested_accounts": 2}


def test_push_that_races_a_starting_run_asks_to_try_again(admin_client, monkeypatch):
    monkeypatch.setattr(services, "run_wake", lambda **kwargs: None)
    response = post_json(admin_client, PUSH_URL, {"accounts": 2})
    assert response.status_code == 409 and response.json() == {"detail": str(api.MSG_PUSH_BUSY)}


@pytest.mark.parametrize(
    "body", [{}, {"accounts": 0}, {"accounts": api.MAX_PUSH_ACCOUNTS + 1}, {"accounts": "many"}]
)
def test_push_refuses_a_bad_count(admin_client, body):
    response = post_json(admin_client, PUSH_URL, body)
    assert response.status_code == 400 and "accounts" in response.json()
    assert not ReplenishmentRun.objects.exists()


def test_push_needs_the_permission(client, client_with, user_with):
    assert post_json(client, PUSH_URL, {"accounts": 1}).status_code in (401, 403)
    assert (
        post_json(
            client_with("webhooks.push_accounts", staff=False), PUSH_URL, {"accounts": 1}
        ).status_code
        == 403
    )
    assert (
        post_json(
            client_with("webhooks.view_replenishmentrun"), PUSH_URL, {"accounts": 1}
        ).status_code
        == 403
    )
    assert not ReplenishmentRun.objects.exists()
    client.logout()
    token, key = api_token_create(user=user_with("webhooks.push_accounts"))
    response = post_json(client, PUSH_URL, {"accounts": 1}, HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 202 and ReplenishmentRun.objects.get().requested_by == token.user


# --- Secrets -----------------------------------------------------------------------------------


def test_no_response_carries_any_piece_of_a_token(admin_client, manager):
    """Every GET endpoint, lists and details, over a pool that has been through a run."""
    accounts = AccountFactory.create_batch(3)
    webhook_run(
        manager, ["ok", "http500", "reject"], current_seats=0, message=accounts[0].access_token
    )
    services.event_refuse(
        reason="The body is not valid JSON.",
        key_ok=True,
        payload=accounts[1].session_token,
        remote_addr=None,
    )
    services.event_receive(
        current_seats=1,
        threshold=10,
        message=accounts[2].refresh_token,
        payload=accounts[2].access_token,
        remote_addr=None,
    )
    rows = {
        "api-account": [a.pk for a in accounts],
        "api-event": list(WebhookEvent.objects.values_list("pk", flat=True)),
        "api-run": list(ReplenishmentRun.objects.values_list("pk", flat=True)),
        "api-attempt": list(ImportAttempt.objects.values_list("pk", flat=True)),
    }
    urls = [STATS_URL]
    for name, pks in rows.items():
        assert pks, name
        urls += [reverse(f"{name}-list"), *(reverse(f"{name}-detail", args=[pk]) for pk in pks)]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert_no_secret(response.content.decode(), *secrets_of(*accounts))
