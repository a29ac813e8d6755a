"""POST /webhooks/low-stock/ through the test client: auth, validation, recording, the one read."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from webhooks import views
from webhooks.models import EventStatus, ReplenishmentRun, RunStatus, RunTrigger, WebhookEvent

pytestmark = pytest.mark.django_db

URL = "/webhooks/low-stock/"
KEY = "manager-shared-secret"
BODY = {
    "event": "low_stock",
    "current_seats": 5,
    "threshold": 10,
    "message": "库存不足预警：系统总可用车位仅剩 5",
}


@pytest.fixture(autouse=True)
def manager_key(settings):
    settings.MANAGER_API_KEY = KEY


def post(
    client, body=BODY, *, key=KEY, url=URL, content_type="application/json", raw=None, **extra
):
    headers = {"HTTP_X_API_KEY": key} if key is not None else {}
    data = raw if raw is not None else json.dumps(body, ensure_ascii=False)
    return client.post(url, data=data, content_type=content_type, **headers, **extra)


def test_accepted_event_is_recorded_and_wakes_one_run(client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = post(client)
    assert response.status_code == 202
    event = WebhookEvent.objects.get()
    assert response.json() == {"event_id": event.pk, "status": "queued"}
    assert (event.status, event.current_seats, event.threshold, event.key_ok) == (
        EventStatus.QUEUED,
        5,
        10,
        True,
    )
    run = ReplenishmentRun.objects.get()
    assert (run.status, run.trigger) == (RunStatus.QUEUED, RunTrigger.WEBHOOK)
    assert len(callbacks) == 1  # the task, enqueued on commit


def test_a_burst_wakes_a_single_run(client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        statuses = [post(client, {**BODY, "current_seats": n}).json()["status"] for n in range(20)]
    assert statuses == ["queued"] * 20
    assert ReplenishmentRun.objects.count() == 1 and len(callbacks) == 1
    assert WebhookEvent.objects.filter(status=EventStatus.QUEUED).count() == 20


def test_events_during_a_run_wait_for_its_follow_up_with_one_statement(
    client, django_assert_num_queries
):
    now = timezone.now()
    running = ReplenishmentRun.objects.create(
        trigger=RunTrigger.WEBHOOK,
        status=RunStatus.RUNNING,
        started_at=now,
        lease_expires_at=now + timezone.timedelta(minutes=5),
    )
    with django_assert_num_queries(1):
        response = post(client)
    assert response.status_code == 202 and response.json()["status"] == "queued"
    event = WebhookEvent.objects.get()
    assert (event.status, event.during_run, event.run_id) == (EventStatus.QUEUED, True, None)
    assert response.json()["event_id"] == event.pk
    assert ReplenishmentRun.objects.count() == 1 and running.status == RunStatus.RUNNING


def test_events_while_a_run_is_queued_wake_nothing_in_one_statement(
    client, django_assert_num_queries
):
    ReplenishmentRun.objects.create(trigger=RunTrigger.WEBHOOK)
    with django_assert_num_queries(1):
        response = post(client)
    assert response.status_code == 202
    event = WebhookEvent.objects.get()
    assert (event.status, event.during_run, event.key_ok, event.calls) == (
        EventStatus.QUEUED,
        False,
        True,
        1,
    )
    assert (event.current_seats, event.threshold, event.refusal) == (5, 10, "")
    assert ReplenishmentRun.objects.count() == 1


def test_a_run_whose_worker_died_does_not_swallow_events(client):
    now = timezone.now()
    ReplenishmentRun.objects.create(
        trigger=RunTrigger.WEBHOOK,
        status=RunStatus.RUNNING,
        started_at=now,
        lease_expires_at=now - timezone.timedelta(seconds=1),
    )
    assert post(client).json()["status"] == "queued"
    assert ReplenishmentRun.objects.filter(status=RunStatus.QUEUED).count() == 1


@pytest.mark.parametrize("url", ["/webhooks/low-stock", "/webhooks/low-stock/"])
def test_trailing_slash_is_optional(client, url):
    assert post(client, url=url).status_code == 202


@pytest.mark.parametrize("key", [None, "", "wrong", KEY + "x", KEY[:-1]])
def test_missing_or_wrong_key_is_refused_and_recorded(client, key):
    response = post(client, key=key)
    assert response.status_code == 401
    assert response.json() == {"error": views.ERR_KEY}
    event = WebhookEvent.objects.get()
    assert (event.status, event.key_ok, event.refusal) == (
        EventStatus.REFUSED,
        False,
        views.ERR_KEY,
    )
    assert not ReplenishmentRun.objects.exists()


def test_a_flood_of_wrong_keys_leaves_a_row_a_minute_with_the_calls_counted(
    client, django_capture_on_commit_callbacks
):
    for n in range(2000):
        assert post(client, key=f"guess-{n}").status_code == 401
    refused = WebhookEvent.objects.get()  # one address, one reason, within a minute: one row
    assert (refused.status, refused.refusal, refused.calls) == (
        EventStatus.REFUSED,
        views.ERR_KEY,
        2000,
    )

    # Another address and another reason get rows of their own.
    post(client, key="guess", REMOTE_ADDR="127.0.0.9")
    post(client, raw="not json")
    assert sorted(WebhookEvent.objects.values_list("remote_addr", "refusal", "calls")) == [
        ("127.0.0.1", views.ERR_KEY, 2000),
        ("127.0.0.1", views.ERR_NOT_JSON, 1),
        ("127.0.0.9", views.ERR_KEY, 1),
    ]

    # The right key right after the flood is accepted as usual.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        accepted = post(client)
    assert accepted.status_code == 202 and accepted.json()["status"] == "queued"
    assert (
        len(callbacks) == 1
        and ReplenishmentRun.objects.filter(status=RunStatus.QUEUED).count() == 1
    )


def test_a_refusal_a_minute_after_the_recorded_one_starts_a_new_row(client):
    post(client, key="wrong")
    post(client, key="wrong")
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(seconds=61))
    post(client, key="wrong")
    assert sorted(WebhookEvent.objects.values_list("calls", flat=True)) == [1, 2]


def test_behind_the_proxy_a_refusal_records_the_forwarded_client(client, settings):
    settings.BEHIND_TLS_PROXY, settings.TRUSTED_PROXY_COUNT = True, 1
    post(
        client, key="wrong", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.1, 203.0.113.5"
    )
    post(client, key="wrong", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert sorted(WebhookEvent.objects.values_list("remote_addr", flat=True)) == [
        "203.0.113.5",
        "203.0.113.9",
    ]


@pytest.mark.parametrize("key", [KEY.upper(), KEY.capitalize(), KEY[:-1] + KEY[-1].upper()])
def test_the_key_is_case_sensitive_a_valid_body_with_the_key_in_another_case_is_refused(
    client, key
):
    assert key != KEY and key.lower() == KEY.lower()
    response = post(client, key=key)
    assert response.status_code == 401
    assert WebhookEvent.objects.get().status == EventStatus.REFUSED
    assert not ReplenishmentRun.objects.exists()


def test_no_key_configured_refuses_everything_and_says_why(client, settings):
    settings.MANAGER_API_KEY = ""
    response = post(client, key=None)
    assert response.status_code == 401 and response.json()["error"] == views.ERR_NO_KEY_CONFIGURED
    assert WebhookEvent.objects.get().refusal == views.ERR_NO_KEY_CONFIGURED


def test_key_is_compared_in_constant_time(client, monkeypatch):
    calls = []
    real = views.hmac.compare_digest
    monkeypatch.setattr(
        views.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b)
    )
    post(client, key="guess")
    assert calls == [(b"guess", KEY.encode())]


def test_other_methods_get_405_json(client):
    response = client.get(URL, HTTP_X_API_KEY=KEY)
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert response.json() == {"error": views.ERR_METHOD}
    assert not WebhookEvent.objects.exists()


def test_a_body_over_64_kb_is_413(client):
    response = post(client, raw=json.dumps({**BODY, "message": "x" * 70_000}))
    assert response.status_code == 413 and response.json()["error"] == views.ERR_TOO_LARGE
    assert WebhookEvent.objects.get().status == EventStatus.REFUSED


def test_wrong_content_type_is_415(client):
    response = post(client, content_type="text/plain")
    assert response.status_code == 415


@pytest.mark.parametrize(
    "raw, field, error",
    [
        ("not json", None, views.ERR_NOT_JSON),
        ("[1, 2]", None, views.ERR_NOT_OBJECT),
        (
            '{"event": "low_stock", "event": "low_stock", "current_seats": 1, "threshold": 2}',
            "event",
            views.ERR_DUPLICATE_KEY % "event",
        ),
        (json.dumps({**BODY, "event": "high_stock"}), "event", views.ERR_EVENT),
        (json.dumps({k: v for k, v in BODY.items() if k != "event"}), "event", views.ERR_EVENT),
        (
            json.dumps({**BODY, "current_seats": True}),
            "current_seats",
            views.ERR_COUNT % "current_seats",
        ),
        (
            json.dumps({**BODY, "current_seats": -1}),
            "current_seats",
            views.ERR_COUNT % "current_seats",
        ),
        (
            json.dumps({**BODY, "current_seats": 10**9}),
            "current_seats",
            views.ERR_COUNT % "current_seats",
        ),
        (
            json.dumps({**BODY, "current_seats": 5.0}),
            "current_seats",
            views.ERR_COUNT % "current_seats",
        ),
        (
            json.dumps({**BODY, "current_seats": "5"}),
            "current_seats",
            views.ERR_COUNT % "current_seats",
        ),
        (
            json.dumps({k: v for k, v in BODY.items() if k != "threshold"}),
            "threshold",
            views.ERR_COUNT % "threshold",
        ),
        (json.dumps({**BODY, "message": 42}), "message", views.ERR_MESSAGE),
        ("[" * 100_00 + "]" * 100_00, None, views.ERR_NOT_JSON),
        # Lone surrogates are valid JSON escapes but not Unicode: no database stores them.
        (json.dumps({**BODY, "message": "库存\ud800"}), "message", views.ERR_SURROGATE % "message"),
        (
            json.dumps({**BODY, "extra": {"deep": ["\udfff"]}}),
            "extra.deep.0",
            views.ERR_SURROGATE % "extra.deep.0",
        ),
        (json.dumps({**BODY, "\ud800": 1}), "\\ud800", views.ERR_SURROGATE % "\\ud800"),
        # Under an empty key the text has no field name to give: the body is named instead.
        (json.dumps({**BODY, "": "\ud800"}), None, views.ERR_SURROGATE % "The body"),
        ('{"\\ud800": 1, "\\ud800": 2}', "\\ud800", views.ERR_DUPLICATE_KEY % "\\ud800"),
    ],
)
def test_bad_bodies_get_a_clear_400_and_change_nothing(client, raw, field, error):
    response = post(client, raw=raw)
    assert response.status_code == 400
    assert response.json() == {"error": error, **({"field": field} if field else {})}
    assert WebhookEvent.objects.get().status == EventStatus.REFUSED
    assert not ReplenishmentRun.objects.exists()


def test_message_is_optional(client):
    assert post(client, {k: v for k, v in BODY.items() if k != "message"}).status_code == 202


@pytest.mark.parametrize(
    "body",
    [{k: v for k, v in BODY.items() if k != "message"}, {**BODY, "message": None}],
    ids=["absent", "null"],
)
def test_an_absent_or_null_message_is_recorded_as_empty(client, body):
    assert post(client, body).status_code == 202
    assert WebhookEvent.objects.get().message == ""


@pytest.mark.parametrize("length, status", [(2000, 202), (2001, 400)])
def test_a_message_may_have_2000_characters_and_no_more(client, length, status):
    assert post(client, {**BODY, "message": "库" * length}).status_code == status


def test_errors_are_utf8_json_not_escaped(client):
    """Operators read refusals in Chinese: a field name repeated is named as written."""
    response = post(
        client,
        raw='{"event": "low_stock", "消息": "a", "消息": "b", "current_seats": 1, "threshold": 2}',
    )
    assert response.status_code == 400
    assert "消息".encode() in response.content


# --- The short path through the middleware -------------------------------------------------------


def test_the_webhook_skips_the_admins_middleware_but_keeps_the_security_headers(client):
    response = post(client)
    assert response.status_code == 202
    assert response["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware still runs
    assert (
        "X-Frame-Options" not in response
    )  # the admin's stack (clickjacking and the rest) does not
    assert response.wsgi_request.__dict__.get("session") is None and not hasattr(
        response.wsgi_request, "user"
    )


def test_the_admin_still_takes_the_whole_stack(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200 and response["X-Frame-Options"] == "DENY"
    assert hasattr(response.wsgi_request, "user") and "csrftoken" in response.cookies


def test_a_webhook_for_a_host_not_allowed_is_refused_and_records_nothing(client):
    response = post(client, HTTP_HOST="pool.evil.example")
    assert response.status_code == 400 and not WebhookEvent.objects.exists()
