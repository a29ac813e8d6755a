"""Reviewing the history: filters, search, date drill-down, and the CSV exports."""

import csv
import io
import re
from datetime import date, datetime, timedelta

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import AccountStatus
from poolsite.text import csv_cell_safe
from tests.factories import AccountBatchFactory, AccountFactory
from tests.support.secrets import assert_no_secret
from tests.support.users import staff_with
from webhooks import admin as webhooks_admin
from webhooks.models import (
    AttemptOutcome,
    EventStatus,
    ImportAttempt,
    ImportMode,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    WebhookEvent,
)

pytestmark = pytest.mark.django_db

ATTEMPTS_URL = reverse("admin:webhooks_importattempt_changelist")
RUNS_URL = reverse("admin:webhooks_replenishmentrun_changelist")
EVENTS_URL = reverse("admin:webhooks_webhookevent_changelist")
EXPORT_URL = reverse("admin:webhooks_importattempt_export")
FILTERED_URL = reverse("admin:webhooks_importattempt_export_filtered")


def at(day: date, hour: int = 12) -> datetime:
    return timezone.make_aware(datetime(day.year, day.month, day.day, hour))


def attempt(account, *, when, outcome=AttemptOutcome.CONSUMED, run=None, **fields):
    row = ImportAttempt.objects.create(
        account=account, run=run, mode=ImportMode.SINGLE, outcome=outcome, **fields
    )
    ImportAttempt.objects.filter(pk=row.pk).update(created_at=when)
    return row


def read_csv(response) -> list[dict]:
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment; filename=")
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


def raw_csv(response) -> str:
    return b"".join(response.streaming_content).decode("utf-8")


# --- The CSV exports ---------------------------------------------------------------------------


def test_neutralise_prefixes_every_formula_start():
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert csv_cell_safe(f"{start}SUM(A1)") == f"'{start}SUM(A1)"
    assert csv_cell_safe("a=b") == "a=b"
    assert csv_cell_safe("") == ""


def test_attempts_of_a_period_are_streamed_without_secrets_and_neutralised(admin_client):
    account = AccountFactory(email="=hyperlink@example.com")
    other = AccountFactory()
    inside = attempt(
        account,
        when=at(date(2026, 3, 1), 0),
        outcome=AttemptOutcome.REJECTED,
        http_status=400,
        # Stored text is redacted on the way in; an export redacts again, whatever a row holds.
        manager_message=f"echoed {account.access_token} and {account.session_token}",
        error="-1+2",
    )
    last_day = attempt(other, when=at(date(2026, 3, 31), 23))
    attempt(other, when=at(date(2026, 4, 1), 0))  # the day after the period
    attempt(other, when=at(date(2026, 2, 28), 23))  # the day before

    response = admin_client.get(
        EXPORT_URL, {"what": "attempts", "first": "2026-03-01", "last": "2026-03-31"}
    )
    rows = read_csv(response)
    assert [int(r["id"]) for r in rows] == [inside.pk, last_day.pk]
    first = rows[0]
    assert first["email"] == "'=hyperlink@example.com"
    assert first["error"] == "'-1+2"
    assert (first["outcome"], first["http_status"], first["mode"], first["sent"]) == (
        "rejected",
        "400",
        "single",
        "true",
    )
    assert first["created_at"] == timezone.localtime(at(date(2026, 3, 1), 0)).isoformat(
        timespec="seconds"
    )
    assert "[redacted]" in first["manager_message"]
    assert (
        response["Content-Disposition"]
        == 'attachment; filename="import-attempts_2026-03-01_2026-03-31.csv"'
    )


def test_the_export_holds_no_token(admin_client):
    account = AccountFactory()
    attempt(
        account,
        when=timezone.now(),
        manager_message=account.refresh_token,
        error=account.session_token[:200],
    )
    today = timezone.localdate().isoformat()
    body = raw_csv(
        admin_client.get(EXPORT_URL, {"what": "attempts", "first": today, "last": today})
    )
    assert account.email in body
    assert_no_secret(body, account.access_token, account.session_token, account.refresh_token)


def test_consumed_accounts_of_a_period(admin_client):
    batch = AccountBatchFactory(label="@batch label")
    consumed = AccountFactory(
        batch=batch,
        email="+first@example.com",
        account_id="6f1c2a3b-0d4e-4f5a-8b9c-0123456789ab",
        status=AccountStatus.CONSUMED,
        consumed_at=at(date(2026, 5, 10)),
    )
    AccountFactory(
        status=AccountStatus.CONSUMED, consumed_at=at(date(2026, 5, 12))
    )  # after the period
    AccountFactory(status=AccountStatus.REJECTED)
    AccountFactory()

    response = admin_client.get(
        EXPORT_URL, {"what": "consumed", "first": "2026-05-01", "last": "2026-05-11"}
    )
    body = raw_csv(response)
    rows = list(csv.DictReader(io.StringIO(body[1:])))
    assert rows == [
        {
            "id": str(consumed.pk),
            "email": "'+first@example.com",
            "account_id": "6f1c2a3b-0d4e-4f5a-8b9c-0123456789ab",
            "consumed_at": timezone.localtime(consumed.consumed_at).isoformat(timespec="seconds"),
            "batch": "'@batch label",
        }
    ]
    assert_no_secret(body, consumed.access_token, consumed.session_token, consumed.refresh_token)
    assert (
        response["Content-Disposition"]
        == 'attachment; filename="consumed-accounts_2026-05-01_2026-05-11.csv"'
    )


def test_export_of_what_the_list_shows(admin_client):
    alice, bob = AccountFactory(email="alice@example.com"), AccountFactory(email="bob@example.com")
    now = timezone.now()
    rejected = attempt(alice, when=now, outcome=AttemptOutcome.REJECTED)
    attempt(alice, when=now, outcome=AttemptOutcome.CONSUMED)
    attempt(bob, when=now, outcome=AttemptOutcome.REJECTED)

    listing = admin_client.get(
        ATTEMPTS_URL, {"outcome__exact": "rejected", "q": "ALI"}
    ).content.decode()
    link = re.search(r'href="([^"]+)" id="export-filtered"', listing).group(1).replace("&amp;", "&")
    assert link.startswith(FILTERED_URL + "?")
    rows = read_csv(admin_client.get(link))
    assert [int(r["id"]) for r in rows] == [rejected.pk]


def test_export_form_explains_what_is_wrong(admin_client):
    assert admin_client.get(EXPORT_URL).status_code == 200
    response = admin_client.get(
        EXPORT_URL, {"what": "attempts", "first": "2026-03-02", "last": "2026-03-01"}
    )
    assert response.status_code == 200 and not response.streaming
    assert str(webhooks_admin.MSG_EXPORT_PERIOD_ORDER) in response.content.decode()
    response = admin_client.get(EXPORT_URL, {"what": "attempts", "first": "yesterday"})
    assert not response.streaming and "errorlist" in response.content.decode()


def test_export_with_filters_the_list_refuses_goes_back_to_the_list(admin_client):
    response = admin_client.get(FILTERED_URL, {"created_at__year": "twenty"})
    assert response.status_code == 302 and response.url == ATTEMPTS_URL
    assert str(webhooks_admin.MSG_BAD_FILTERS) in admin_client.get(response.url).content.decode()


def test_exports_need_the_view_permissions(client):
    period = {"first": "2026-01-01", "last": "2026-01-31"}
    client.force_login(staff_with(username="nobody"))
    assert client.get(EXPORT_URL).status_code == 403
    assert client.get(FILTERED_URL).status_code == 403

    client.force_login(staff_with("webhooks.view_importattempt", username="historian"))
    assert client.get(EXPORT_URL, {"what": "attempts", **period}).streaming
    assert client.get(FILTERED_URL).streaming
    assert client.get(EXPORT_URL, {"what": "consumed", **period}).status_code == 403

    client.force_login(
        staff_with(
            "webhooks.view_importattempt",
            "accounts.view_account",
            username="auditor",
        )
    )
    assert client.get(EXPORT_URL, {"what": "consumed", **period}).streaming


# --- The history lists ------------------------------------------------------------------------


def history(now):
    account = AccountFactory(email="carol@example.com")
    other = AccountFactory(email="dave@example.com")
    run = ReplenishmentRun.objects.create(trigger=RunTrigger.WEBHOOK, status=RunStatus.FINISHED)
    idle = ReplenishmentRun.objects.create(trigger=RunTrigger.MANUAL, status=RunStatus.FINISHED)
    attempt(account, when=now, run=run)
    attempt(other, when=now, run=idle, outcome=AttemptOutcome.UNKNOWN)
    WebhookEvent.objects.create(
        status=EventStatus.ACTED_ON, key_ok=True, current_seats=3, threshold=10, run=run
    )
    WebhookEvent.objects.create(status=EventStatus.REFUSED, key_ok=False, refusal="wrong key")
    return run, idle


def test_history_lists_filter_and_search(admin_client):
    run, idle = history(timezone.now())
    html = admin_client.get(ATTEMPTS_URL, {"outcome__exact": "unknown"}).content.decode()
    assert "dave@example.com" in html and "carol@example.com" not in html
    html = admin_client.get(ATTEMPTS_URL, {"mode__exact": "single", "q": "car"}).content.decode()
    assert "carol@example.com" in html and "dave@example.com" not in html

    html = admin_client.get(RUNS_URL, {"q": "CAROL"}).content.decode()
    shown = set(re.findall(r"/admin/webhooks/replenishmentrun/(\d+)/change/", html))
    assert shown == {str(run.pk)}
    html = admin_client.get(
        RUNS_URL, {"trigger__exact": "manual", "status__exact": "finished"}
    ).content.decode()
    assert set(re.findall(r"/admin/webhooks/replenishmentrun/(\d+)/change/", html)) == {
        str(idle.pk)
    }

    html = admin_client.get(EVENTS_URL, {"status__exact": "refused"}).content.decode()
    refused = WebhookEvent.objects.get(status=EventStatus.REFUSED)
    assert set(re.findall(r"/admin/webhooks/webhookevent/(\d+)/change/", html)) == {str(refused.pk)}


@pytest.mark.parametrize("url", [ATTEMPTS_URL, RUNS_URL, EVENTS_URL])
def test_history_lists_never_count_or_scan_every_row(admin_client, url):
    history(timezone.now())
    for params in (
        {},
        {"_facets": "True"},
        {"q": "carol"} if url != EVENTS_URL else {"status__exact": "acted_on"},
    ):
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(url, params).status_code == 200
        sql = [q["sql"].upper() for q in queries.captured_queries]
        assert not [s for s in sql if "DISTINCT" in s], (
            "the date drill-down must not scan for distinct dates"
        )
        assert all("LIMIT" in s for s in sql if "COUNT(" in s and "DJANGO_ADMIN_LOG" not in s), (
            "uncapped COUNT"
        )


def test_date_drilldown_offers_the_periods_between_the_first_and_last_row(admin_client):
    account = AccountFactory()
    attempt(account, when=at(date(2024, 11, 3)))
    attempt(account, when=at(date(2026, 2, 5)))
    attempt(account, when=at(date(2026, 4, 20)))
    attempt(account, when=at(date(2026, 4, 22)))

    def choices(params):
        html = admin_client.get(ATTEMPTS_URL, params).content.decode()
        nav = re.search(r'<nav class="toplinks">(.*?)</nav>', html, re.S).group(1)
        return re.findall(r'<a href="\?([^"]*)"(?: class="date-back")?>([^<]+)</a>', nav)

    years = choices({})
    assert [title for _, title in years] == ["2024", "2025", "2026"]
    months = choices({"created_at__year": "2026"})
    assert [title.strip() for _, title in months][1:] == [
        "February 2026",
        "March 2026",
        "April 2026",
    ]
    days = choices({"created_at__year": "2026", "created_at__month": "4"})
    assert [title.strip() for _, title in days][1:] == ["April 20", "April 21", "April 22"]
    rows = admin_client.get(
        ATTEMPTS_URL,
        {"created_at__year": "2026", "created_at__month": "4", "created_at__day": "22"},
    )
    assert rows.context["cl"].result_count == 1


def test_a_single_month_of_history_opens_on_its_days(admin_client):
    account = AccountFactory()
    attempt(account, when=at(date(2026, 6, 2)))
    attempt(account, when=at(date(2026, 6, 4)))
    html = admin_client.get(ATTEMPTS_URL).content.decode()
    nav = re.search(r'<nav class="toplinks">(.*?)</nav>', html, re.S).group(1)
    assert "June 2" in nav and "June 3" in nav and "June 4" in nav and "June 5" not in nav


def test_export_links_on_the_attempts_list(admin_client):
    html = admin_client.get(ATTEMPTS_URL).content.decode()
    assert f'href="{EXPORT_URL}"' in html and 'id="export-filtered"' in html


def test_history_is_read_only_for_everyone(client):
    account = AccountFactory()
    row = attempt(account, when=timezone.now())
    client.force_login(staff_with("webhooks.view_importattempt"))
    change = reverse("admin:webhooks_importattempt_change", args=[row.pk])
    assert client.get(change).status_code == 200
    assert client.post(change, {"outcome": "rejected"}).status_code == 403
    assert client.get(reverse("admin:webhooks_webhookevent_changelist")).status_code == 403
    assert ImportAttempt.objects.get(pk=row.pk).outcome == AttemptOutcome.CONSUMED


def test_the_export_form_offers_the_last_30_days(admin_client):
    html = admin_client.get(EXPORT_URL).content.decode()
    today = timezone.localdate()
    first = re.search(r'<input [^>]*name="first"[^>]*>', html).group(0)
    last = re.search(r'<input [^>]*name="last"[^>]*>', html).group(0)
    assert f'value="{(today - timedelta(days=29)).isoformat()}"' in first
    assert f'value="{today.isoformat()}"' in last


@pytest.mark.parametrize(
    "page",
    [
        "accounts_account",
        "webhooks_importattempt",
        "webhooks_replenishmentrun",
        "webhooks_followedteam",
    ],
)
def test_search_help_says_it_matches_the_start_of_an_address(admin_client, page):
    html = admin_client.get(reverse(f"admin:{page}_changelist")).content.decode()
    assert "Matches the start of" in html and "not joanna@example.com" in html
