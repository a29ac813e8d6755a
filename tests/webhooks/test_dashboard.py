"""The dashboard on the admin home, and the manager's reachability it fetches after loading."""

import os
import re
import socket
import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import AccountStatus, UnusableReason
from alerts.models import AlertCondition, AlertDelivery, AlertEvent, AlertEventKind, AlertState
from tests.factories import AccountFactory
from tests.support.manager import MANAGER_KEY
from tests.support.users import staff_with
from webhooks import admin as webhooks_admin
from webhooks.client import (
    PROBE_KEY_REFUSED,
    PROBE_OK,
    PROBE_UNEXPECTED,
    PROBE_UNREACHABLE,
    ManagerClient,
)
from webhooks.models import (
    EventStatus,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    WebhookEvent,
)
from webhooks.templatetags.dashboard import runway

pytestmark = pytest.mark.django_db

INDEX_URL = reverse("admin:index")
STATUS_URL = reverse("admin:webhooks_manager_status")


def make_pool(now):
    """3 usable + 1 flagged available, 1 reserved, 2 consumed today, 1 rejected, 1 retired."""
    for _ in range(3):
        AccountFactory()
    AccountFactory(usable=False, unusable_reason=UnusableReason.AT_EXPIRED)
    AccountFactory(
        status=AccountStatus.RESERVED,
        lease_id=uuid.uuid4(),
        lease_expires_at=now + timedelta(minutes=5),
    )
    for _ in range(2):
        AccountFactory(status=AccountStatus.CONSUMED, consumed_at=now - timedelta(seconds=5))
    AccountFactory(status=AccountStatus.REJECTED)
    AccountFactory(status=AccountStatus.RETIRED)


def make_history(n):
    runs = [
        ReplenishmentRun.objects.create(
            trigger=RunTrigger.WEBHOOK, status=RunStatus.FINISHED, need=2
        )
        for _ in range(n)
    ]
    events = [
        WebhookEvent.objects.create(
            status=EventStatus.ACTED_ON, key_ok=True, current_seats=4, threshold=10, run=run
        )
        for run in runs
    ]
    return events, runs


def test_dashboard_shows_the_pool_consumption_and_runway(admin_client):
    now = timezone.now()
    make_pool(now)
    html = admin_client.get(INDEX_URL).content.decode()

    counts = dict(re.findall(r'data-state-count="(\w+)">(\d+)<', html))
    assert counts == {
        "available": "4",
        "reserved": "1",
        "consumed": "2",
        "rejected": "1",
        "retired": "1",
    }
    figures = dict(re.findall(r'data-figure="(\w+)">(?:<a [^>]*>)?([^<]+)<', html))
    assert figures["available_usable"] == "3"
    assert figures["held_for_staff"] == "0"
    assert figures["flagged_at_load"] == "1"
    assert figures["seats_in_stock"] == "15"  # 3 usable accounts × 5 seats (the default policy)
    assert figures["runway_days"] == "10.5 days"  # 3 accounts at 2 a week
    # One bar a day for 30 days, today's at full height (the busiest day).
    bars = re.findall(
        r'<rect class="bar" x="[\d.]+" y="([\d.]+)" width="14" height="([\d.]+)" data-day="([\d-]+)" data-consumed="(\d+)"',
        html,
    )
    assert len(bars) == 30
    assert bars[-1][2:] == (timezone.localdate(now).isoformat(), "2") and float(bars[-1][1]) == 100
    assert all(consumed == "0" and float(height) == 0 for _, height, _, consumed in bars[:-1])
    assert "<script src=" not in html.split('id="pool-dashboard"')[1]  # no chart library, no CDN


def test_an_empty_pool_has_no_runway_figure(admin_client):
    html = admin_client.get(INDEX_URL).content.decode()
    assert 'data-figure="runway_days">—<' in html
    assert "nothing consumed in the last 7 days" in html


def test_the_last_ten_events_and_runs_link_to_their_pages(admin_client):
    events, runs = make_history(12)
    html = admin_client.get(INDEX_URL).content.decode()
    shown_events = [int(pk) for pk in re.findall(r'data-event="(\d+)"', html)]
    shown_runs = [int(pk) for pk in re.findall(r'data-run="(\d+)"', html)]
    assert shown_events == [e.pk for e in reversed(events)][:10]
    assert shown_runs == [r.pk for r in reversed(runs)][:10]
    assert reverse("admin:webhooks_webhookevent_change", args=[events[-1].pk]) in html
    assert reverse("admin:webhooks_replenishmentrun_change", args=[runs[-1].pk]) in html
    assert str(RunStatus.FINISHED.label) in html and str(EventStatus.ACTED_ON.label) in html


def test_the_dashboard_takes_a_bounded_number_of_queries(
    admin_client, django_assert_max_num_queries
):
    now = timezone.now()
    make_pool(now)
    make_history(3)
    # Pool, consumption, alerts, key census, refused calls, imported Teams (3), events, runs, session.
    with django_assert_max_num_queries(20) as few:
        admin_client.get(INDEX_URL)
    for _ in range(10):
        make_pool(now)
    make_history(20)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert admin_client.get(INDEX_URL).status_code == 200


def test_the_dashboard_counts_the_refused_calls_of_the_last_hour(admin_client):
    def refused(calls, *, minutes_ago):
        event = WebhookEvent.objects.create(
            status=EventStatus.REFUSED, key_ok=False, refusal="wrong key", calls=calls
        )
        WebhookEvent.objects.filter(pk=event.pk).update(
            received_at=timezone.now() - timedelta(minutes=minutes_ago)
        )

    refused(1500, minutes_ago=2)
    refused(7, minutes_ago=59)
    refused(40, minutes_ago=61)  # older than an hour
    make_history(1)  # an accepted event is not a refused call
    html = admin_client.get(INDEX_URL).content.decode()
    line = re.search(r'id="dashboard-refused">([^<]*)<', html).group(1).strip()
    assert line == "1507 refused calls in the last hour"


def test_the_page_never_waits_on_the_manager(admin_client, manager):
    html = admin_client.get(INDEX_URL).content.decode()
    assert f'data-url="{STATUS_URL}"' in html
    assert manager.requests == []  # the reachability is fetched by the browser, afterwards


def test_the_dashboard_in_simplified_chinese(admin_client):
    make_pool(timezone.now())
    html = admin_client.get(INDEX_URL, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert '<html lang="zh-hans"' in html
    assert re.search(r'>可用</a></th><td data-state-count="available">4<', html)  # the state names


def test_what_a_user_sees_follows_the_permissions(client):
    client.force_login(staff_with(username="nobody"))
    html = client.get(INDEX_URL).content.decode()
    assert 'id="dashboard-pool"' not in html and 'id="dashboard-runs"' not in html
    assert client.get(STATUS_URL).status_code == 403

    reviewer = staff_with(
        "accounts.view_account",
        "webhooks.view_webhookevent",
        "webhooks.view_replenishmentrun",
        username="reviewer",
    )
    client.force_login(reviewer)
    html = client.get(INDEX_URL).content.decode()
    assert (
        'id="dashboard-pool"' in html
        and 'id="dashboard-runs"' in html
        and 'id="dashboard-events"' in html
    )
    assert 'id="dashboard-push"' not in html and 'id="dashboard-policy"' not in html

    operator = staff_with(
        "webhooks.view_replenishmentrun",
        "webhooks.push_accounts",
        "webhooks.change_replenishmentpolicy",
        username="operator",
    )
    client.force_login(operator)
    html = client.get(INDEX_URL).content.decode()
    assert 'id="dashboard-push"' in html and 'id="dashboard-policy"' in html


def test_held_and_flagged_accounts_are_counted_apart_from_usable_stock(admin_client):
    AccountFactory.create_batch(2)
    AccountFactory(usable=False, unusable_reason=UnusableReason.UNKNOWN_OUTCOMES)
    AccountFactory(usable=False, unusable_reason=UnusableReason.KEY_MISSING)
    AccountFactory(usable=False, unusable_reason=UnusableReason.AT_EXPIRED)
    html = admin_client.get(INDEX_URL).content.decode()
    figures = dict(re.findall(r'data-figure="(\w+)">(?:<a [^>]*>)?([^<]+)<', html))
    assert (figures["available_usable"], figures["held_for_staff"], figures["flagged_at_load"]) == (
        "2",
        "2",
        "1",
    )
    held = html.split('data-figure="held_for_staff"')[1].split("</div>")[0]
    assert "?stock=held" in held and f"1 · {UnusableReason.UNKNOWN_OUTCOMES.label}" in held
    assert f"1 · {UnusableReason.KEY_MISSING.label}" in held


# --- Problems first --------------------------------------------------------------------------


def problems(html: str) -> str:
    """The list of problems at the top of the dashboard ("" when there is none)."""
    found = re.search(r'<ul id="dashboard-problems">(.*?)</ul>', html, re.S)
    return found.group(1) if found else ""


def test_an_active_alert_is_on_top_with_what_to_do(admin_client, settings):
    settings.MANAGER_BASE_URL, settings.MANAGER_API_KEY = "http://127.0.0.1:1", "k"
    AccountFactory()
    AlertState.objects.create(
        condition=AlertCondition.UNKNOWN_OUTCOMES, active=True, since=timezone.now()
    )
    AlertEvent.objects.create(
        kind=AlertEventKind.RAISED,
        condition=AlertCondition.UNKNOWN_OUTCOMES,
        title="Imports keep failing",
        message="Check that the manager is up.",
        delivery=AlertDelivery.SENT,
    )
    AlertState.objects.create(condition=AlertCondition.LOW_STOCK, active=False)
    html = admin_client.get(INDEX_URL).content.decode()
    top = problems(html)
    assert 'data-alert="unknown_outcomes"' in top and "Check that the manager is up." in top
    assert "low_stock" not in top
    assert html.index('id="dashboard-problems"') < html.index('id="dashboard-pool"')


def test_a_run_stopped_on_a_configuration_error_stands_out_until_a_run_finishes(
    admin_client, settings
):
    settings.MANAGER_BASE_URL, settings.MANAGER_API_KEY = "http://127.0.0.1:1", "k"
    AccountFactory()
    ReplenishmentRun.objects.create(trigger=RunTrigger.WEBHOOK, status=RunStatus.FINISHED)
    stopped = ReplenishmentRun.objects.create(
        trigger=RunTrigger.WEBHOOK,
        status=RunStatus.CONFIG_ERROR,
        error="The manager refused the request (HTTP 401)",
    )
    top = problems(admin_client.get(INDEX_URL).content.decode())
    assert 'id="dashboard-stopped-run"' in top and f"#{stopped.pk}" in top and "HTTP 401" in top

    ReplenishmentRun.objects.create(trigger=RunTrigger.WEBHOOK, status=RunStatus.FINISHED)
    assert problems(admin_client.get(INDEX_URL).content.decode()) == ""


def test_a_fresh_install_says_how_to_load_accounts_and_which_settings_to_set(
    admin_client, settings
):
    settings.MANAGER_BASE_URL, settings.MANAGER_API_KEY = "", ""
    html = admin_client.get(INDEX_URL).content.decode()
    top = problems(html)
    assert 'id="dashboard-no-accounts"' in top and "manage.py load_accounts" in top
    assert 'id="dashboard-not-configured"' in top
    assert (
        "MANAGER_BASE_URL" in top
        and "MANAGER_API_KEY" in top
        and ".env" in top
        and "restart" in top
    )
    assert (
        f'href="{reverse("admin:accounts_account_load")}" class="button" id="dashboard-load"'
        in html
    )

    settings.MANAGER_BASE_URL, settings.MANAGER_API_KEY = "http://127.0.0.1:1", "k"
    AccountFactory()
    assert problems(admin_client.get(INDEX_URL).content.decode()) == ""


def test_the_load_button_needs_the_permission_to_add_accounts(client):
    client.force_login(staff_with("accounts.view_account", username="viewer"))
    assert 'id="dashboard-load"' not in client.get(INDEX_URL).content.decode()


@pytest.mark.parametrize(
    "days, reads",
    [
        (None, "—"),
        (0.5, "0.5 days"),
        (10.5, "10.5 days"),
        (365, "365 days"),
        (365.1, "more than a year"),
        (21199.5, "more than a year"),
    ],
)
def test_the_runway_reads_sensibly(days, reads):
    assert runway(days) == reads


# --- The manager's reachability --------------------------------------------------------------


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def probe():
    client = ManagerClient.from_settings()
    try:
        return client.probe()
    finally:
        client.close()


def test_probe_with_the_right_key_imports_nothing(manager):
    result = probe()
    assert (result.state, result.http_status) == (PROBE_OK, 400)
    assert manager.imported == {}
    assert manager.requests[-1]["body"] == {"import_type": "probe"}


def test_probe_with_a_wrong_key(manager, settings):
    settings.MANAGER_API_KEY = "not-the-key"
    result = probe()
    assert (result.state, result.http_status) == (PROBE_KEY_REFUSED, 401)


def test_probe_of_a_manager_that_is_down(settings):
    settings.MANAGER_BASE_URL = closed_port_url()
    settings.MANAGER_API_KEY = MANAGER_KEY
    result = probe()
    assert (result.state, result.http_status) == (PROBE_UNREACHABLE, None)


@pytest.mark.parametrize(
    "fault, state, status",
    [
        ("redirect", PROBE_KEY_REFUSED, 307),
        ("http500", PROBE_UNEXPECTED, 500),
        ("drop", PROBE_UNREACHABLE, None),
    ],
)
def test_probe_reports_other_answers(manager, fault, state, status):
    manager.plan([fault])
    result = probe()
    assert (result.state, result.http_status) == (state, status)


def test_status_view_right_key(admin_client, manager):
    answer = admin_client.get(STATUS_URL).json()
    assert answer["state"] == PROBE_OK
    assert answer["label"] == str(webhooks_admin.MSG_PROBE[PROBE_OK])


def test_status_view_wrong_key(admin_client, manager, settings):
    settings.MANAGER_API_KEY = "not-the-key"
    answer = admin_client.get(STATUS_URL).json()
    assert (answer["state"], answer["label"]) == (
        PROBE_KEY_REFUSED,
        str(webhooks_admin.MSG_PROBE[PROBE_KEY_REFUSED]),
    )
    assert "not-the-key" not in str(answer)


def test_status_view_unreachable(admin_client, settings):
    settings.MANAGER_BASE_URL = closed_port_url()
    settings.MANAGER_API_KEY = MANAGER_KEY
    answer = admin_client.get(STATUS_URL).json()
    assert (answer["state"], answer["label"]) == (
        PROBE_UNREACHABLE,
        str(webhooks_admin.MSG_PROBE[PROBE_UNREACHABLE]),
    )


def test_status_view_unexpected_answer(admin_client, manager):
    manager.plan(["http500"])
    answer = admin_client.get(STATUS_URL).json()
    assert answer["state"] == PROBE_UNEXPECTED
    assert answer["label"] == webhooks_admin.MSG_PROBE_UNEXPECTED % {"status": 500}


@pytest.mark.parametrize("missing", ["MANAGER_BASE_URL", "MANAGER_API_KEY"])
def test_status_view_not_configured(admin_client, manager, settings, missing):
    setattr(settings, missing, "")
    answer = admin_client.get(STATUS_URL).json()
    assert answer["state"] == webhooks_admin.PROBE_NOT_CONFIGURED
    assert answer["label"] == str(webhooks_admin.MSG_PROBE[webhooks_admin.PROBE_NOT_CONFIGURED])
    assert manager.requests == []


# --- In a browser: the inline script fills in the reachability --------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="Debian chromium is not installed (scripts/ensure_chromium.sh)",
)
def test_the_browser_shows_the_reachability_after_the_page_loaded(
    live_server, manager, admin_user, client
):
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    client.force_login(admin_user)
    session = client.cookies["sessionid"].value
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = browser.new_context(locale="en-US")
            context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
            page = context.new_page()
            page.goto(f"{live_server.url}{INDEX_URL}")
            page.wait_for_selector('#manager-status[data-state="ok"]', timeout=15_000)
            assert page.inner_text("#manager-status") == str(webhooks_admin.MSG_PROBE[PROBE_OK])
        finally:
            browser.close()
