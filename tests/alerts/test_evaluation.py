"""Alerts through apprise, delivered over real HTTP to a loopback receiver (apprise's bark://).

Transactional tests: notifications leave on commit, as they do in production.
"""

import json
import re
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts.crypto import generate_key
from accounts.models import Account, AccountStatus, UnusableReason
from alerts import admin as alerts_admin
from alerts import evaluation as alerts
from tests.factories import AccountFactory
from webhooks import services
from webhooks.models import (
    AlertCondition,
    AlertDelivery,
    AlertEvent,
    AlertEventKind,
    AlertSettings,
    AlertState,
    NotificationTarget,
    ReplenishmentRun,
    RunStatus,
)
from webhooks.selectors import dashboard_stats

pytestmark = pytest.mark.django_db(transaction=True)


class Receiver:
    """A Bark server stand-in on a loopback port: records every JSON post, answers `status`."""

    def __init__(self, status: int = 200):
        self.status = status
        self.posts: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append(json.loads(body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str = "hook", credentials: str = "") -> str:
        return f"bark://{credentials}127.0.0.1:{self._server.server_address[1]}/{path}"

    @property
    def titles(self) -> list[str]:
        return [post["title"] for post in self.posts]


@pytest.fixture(autouse=True)
def loopback_destinations_allowed(settings):
    """These tests deliver to loopback receivers; the tests of the refusal turn it off again."""
    settings.NOTIFY_ALLOW_PRIVATE_HOSTS = True


@pytest.fixture
def receiver(settings):
    with Receiver() as server:
        settings.NOTIFY_URLS = [server.url()]
        yield server


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
    alerts.alert_evaluate(now=timezone.now())


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


# --- Conditions, each once per episode ------------------------------------------------------


def test_a_fresh_install_raises_no_stock_alert_and_warns_of_no_destination(settings, caplog):
    settings.NOTIFY_URLS = []
    thresholds(stock_below=10, runway_below_days=3)
    evaluate()
    assert not AlertState.objects.filter(active=True).exists()
    assert not AlertEvent.objects.exists()
    assert str(alerts.MSG_NO_DESTINATION) not in caplog.text

    emptied_pool()
    evaluate()
    assert state(AlertCondition.LOW_STOCK).active
    assert str(alerts.MSG_NO_DESTINATION) in caplog.text


def test_low_stock_notifies_once_and_again_only_after_clearing(receiver):
    thresholds(stock_below=3)
    AccountFactory.create_batch(2)
    AccountFactory(usable=False, unusable_reason=UnusableReason.AT_EXPIRED)  # not stock
    evaluate()
    evaluate()
    assert receiver.titles == [str(alerts.TITLES[AlertCondition.LOW_STOCK])]
    assert receiver.posts[0]["body"] == str(alerts.MSG_LOW_STOCK % {"available": 2, "threshold": 3})
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
    assert receiver.titles == [str(alerts.TITLES[AlertCondition.SHORT_RUNWAY])]
    expected = alerts.MSG_SHORT_RUNWAY % {
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

    alerts.alert_evaluate(now=just_after_midnight)

    assert dashboard_stats(now=just_after_midnight)["runway_days"] == 5.0
    assert receiver.titles == [str(alerts.TITLES[AlertCondition.SHORT_RUNWAY])]


def test_a_configuration_error_notifies_once_until_a_run_goes_through(receiver, manager):
    thresholds(config_error=True)
    AccountFactory.create_batch(6)
    manager.plan(["unauthorized", "unauthorized"])
    stopped = run_now()
    assert stopped.status == RunStatus.CONFIG_ERROR
    assert run_now().status == RunStatus.CONFIG_ERROR
    assert receiver.titles == [str(alerts.TITLES[AlertCondition.CONFIG_ERROR])]
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
    assert receiver.titles == [str(alerts.TITLES[AlertCondition.UNKNOWN_OUTCOMES])]
    assert receiver.posts[0]["body"] == str(alerts.MSG_UNKNOWN_OUTCOMES % {"count": 2})

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
    assert receiver.titles == [str(alerts.TITLES[AlertCondition.LOW_STOCK])]


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


# --- Delivery failures ------------------------------------------------------------------------


def test_a_broken_destination_is_recorded_and_the_run_goes_on(receiver, manager, settings, caplog):
    down = f"bark://127.0.0.1:{closed_port()}/down"
    settings.NOTIFY_URLS = [receiver.url(), down]
    with Receiver(status=500) as refusing:
        refusing_url = refusing.url(credentials="ops:pa55word-of-the-bot@")
        NotificationTarget.objects.create(
            label="ops chat",
            url=refusing_url,
            masked_url=alerts.notification_url_mask(url=refusing_url),
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
    assert event.error.count(str(alerts.MSG_NOT_DELIVERED)) == 2 and "500" not in event.error
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
    assert AlertEvent.objects.first().error == str(alerts.MSG_NO_DESTINATION)


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
    assert str(alerts.MSG_URL_UNDECRYPTABLE) in state(AlertCondition.LOW_STOCK).last_error
    assert (
        admin_client.get(reverse("admin:webhooks_notificationtarget_changelist")).status_code == 200
    )


# --- Admin ------------------------------------------------------------------------------------


def test_the_test_button_sends_one_notification(client, admin_user, receiver):
    client.force_login(admin_user)
    changelist = reverse("admin:webhooks_notificationtarget_changelist")
    page = client.get(changelist).content.decode()
    assert (
        'id="test-notification-form"' in page
        and "bark://…hook" in page
        and receiver.url() not in page
    )

    button = reverse("admin:webhooks_notificationtarget_test")
    response = client.post(button)
    assert response.status_code == 302 and response.url == changelist
    assert receiver.titles == [str(alerts.TITLE_TEST)]
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        str(alerts_admin.MSG_TEST_SENT)
    ]
    event = AlertEvent.objects.get()
    assert (event.kind, event.delivery, event.requested_by) == (
        AlertEventKind.TEST,
        SENT,
        admin_user,
    )
    assert client.get(button).status_code == 405 and len(receiver.posts) == 1


def test_the_test_button_reports_a_failure(client, admin_user, settings):
    settings.NOTIFY_URLS = []
    client.force_login(admin_user)
    response = client.post(reverse("admin:webhooks_notificationtarget_test"))
    expected = alerts_admin.MSG_TEST_NOT_SENT % {"error": alerts.MSG_NO_DESTINATION}
    assert [str(m) for m in get_messages(response.wsgi_request)] == [str(expected)]


def test_the_test_button_needs_the_permission(client, django_user_model, receiver):
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_notificationtarget"))
    client.force_login(viewer)
    assert (
        'id="test-notification-form"'
        not in client.get(reverse("admin:webhooks_notificationtarget_changelist")).content.decode()
    )
    assert client.post(reverse("admin:webhooks_notificationtarget_test")).status_code == 403
    assert receiver.posts == []


BOT_TOKEN = "123456789:AAEhBOweik6ad9r_QXMENQjcrGbqCr4K-bs"


def test_destinations_are_masked_in_the_admin_and_encrypted_at_rest(client, admin_user):
    client.force_login(admin_user)
    add = reverse("admin:webhooks_notificationtarget_add")
    url = f"tgram://{BOT_TOKEN}/987654321"

    refused = client.post(
        add, {"label": "ops", "new_url": f"nonsense://{BOT_TOKEN}", "enabled": "on"}
    )
    assert refused.status_code == 200 and BOT_TOKEN not in refused.content.decode()
    assert str(alerts.MSG_SCHEME_NOT_ALLOWED) in refused.content.decode()
    unusable = client.post(
        add, {"label": "ops", "new_url": "tgram://not-a-bot-token", "enabled": "on"}
    )
    assert str(alerts.MSG_URL_NOT_RECOGNISED) in unusable.content.decode()
    assert client.post(add, {"label": "ops", "new_url": "", "enabled": "on"}).status_code == 200

    assert client.post(add, {"label": "ops", "new_url": url, "enabled": "on"}).status_code == 302
    target = NotificationTarget.objects.get()
    assert (target.url, target.masked_url) == (url, "tgram://…4321")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT url FROM {NotificationTarget._meta.db_table}")
        assert BOT_TOKEN.encode() not in bytes(cursor.fetchone()[0])

    change = reverse("admin:webhooks_notificationtarget_change", args=[target.pk])
    assert (
        client.post(change, {"label": "ops room", "new_url": "", "enabled": "on"}).status_code
        == 302
    )
    assert NotificationTarget.objects.get().url == url  # an empty field keeps the URL

    listing = client.get(reverse("admin:webhooks_notificationtarget_changelist")).content.decode()
    assert "tgram://…4321" in listing
    for page in (
        listing,
        client.get(change).content.decode(),
        client.get(change + "../history/").content.decode(),
    ):
        assert BOT_TOKEN not in page and "AAEhBOweik6ad9r" not in page
    for entry in LogEntry.objects.all():
        assert BOT_TOKEN not in entry.object_repr + entry.change_message


def test_thresholds_change_only_with_the_change_permission(client, admin_user, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_alertsettings"))
    client.force_login(viewer)
    listing = client.get(reverse("admin:webhooks_alertsettings_changelist"))
    assert listing.status_code == 302
    form = {
        "stock_below": 25,
        "runway_below_days": 5,
        "config_error": "on",
        "unknown_in_a_row": 4,
        "banned_in_a_day": 3,
    }
    assert 'name="stock_below"' not in client.get(listing.url).content.decode()
    assert client.post(listing.url, form).status_code == 403
    assert AlertSettings.objects.get().stock_below == 10

    client.force_login(admin_user)
    assert (
        client.post(listing.url, {**form, "unknown_in_a_row": 101}).status_code == 200
    )  # at most 100
    assert client.post(listing.url, form).status_code == 302
    assert AlertSettings.objects.get().stock_below == 25


def test_states_and_history_are_listed(admin_client, receiver):
    thresholds(stock_below=1)
    emptied_pool()
    evaluate()
    states = admin_client.get(reverse("admin:webhooks_alertstate_changelist"))
    events = admin_client.get(reverse("admin:webhooks_alertevent_changelist"))
    assert states.status_code == events.status_code == 200
    assert str(alerts.TITLES[AlertCondition.LOW_STOCK]) in events.content.decode()


# --- Destinations that would reach inside the network (SSRF) --------------------------------
# No test here opens a socket: names resolve through a stub, and any connection attempt fails
# the test. Refusals must come before any connection.

INTERNAL = [
    "10.0.0.5",
    "169.254.169.254",
    "::1",
    "127.0.0.1",
    "192.168.1.10",
    "fd00:ec2::254",
    "224.0.0.1",
    "100.100.100.200",
]


@pytest.fixture
def network(monkeypatch, settings):
    """Resolves every name to `network.addresses`; records (and fails) any connection attempt."""
    settings.NOTIFY_ALLOW_PRIVATE_HOSTS = False

    class Network:
        addresses = ["1.1.1.1"]
        looked_up: list[str] = []
        connections: list = []

    def getaddrinfo(host, port, *args, **kwargs):
        Network.looked_up.append(host)
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port or 0),
            )
            for a in Network.addresses
        ]

    def connect(sock, address):
        Network.connections.append(address)
        raise AssertionError(f"a test tried to connect to {address}")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    return Network


def add_destination(client, url):
    return client.post(
        reverse("admin:webhooks_notificationtarget_add"),
        {"label": "x", "new_url": url, "enabled": "on"},
    )


@pytest.mark.parametrize("address", INTERNAL)
@pytest.mark.parametrize(
    "url",
    [
        "bark://bark.internal.example/DEVICEKEY",
        "mailtos://ops:pw@mail.internal.example?to=ops@example.com",
    ],
)
def test_a_destination_whose_host_resolves_inside_is_refused_when_saved(
    admin_client, network, url, address
):
    network.addresses = [address]
    response = add_destination(admin_client, url)
    assert (
        response.status_code == 200
        and str(alerts.MSG_HOST_NOT_ALLOWED) in response.content.decode()
    )
    assert not NotificationTarget.objects.exists()
    assert network.looked_up and network.connections == []


@pytest.mark.parametrize(
    "url, problem",
    [
        (
            "json://127.0.0.1:8080/hook?+X-Token=abc",
            "MSG_SCHEME_NOT_ALLOWED",
        ),  # custom headers, any method
        ("xml://bark.example/", "MSG_SCHEME_NOT_ALLOWED"),
        ("form://bark.example/", "MSG_SCHEME_NOT_ALLOWED"),
        ("bark://[::1]:8080/DEVICEKEY", "MSG_HOST_NOT_ALLOWED"),
        ("barks://169.254.169.254/DEVICEKEY", "MSG_HOST_NOT_ALLOWED"),
        ("mailto://ops:pw@example.com?smtp=10.1.2.3&to=ops@example.com", "MSG_HOST_NOT_ALLOWED"),
    ],
)
def test_other_kinds_and_internal_addresses_in_the_url_are_refused(
    admin_client, network, url, problem
):
    response = add_destination(admin_client, url)
    assert str(getattr(alerts, problem)) in response.content.decode()
    assert not NotificationTarget.objects.exists() and network.connections == []


def test_a_name_that_points_inside_when_sending_is_refused_before_connecting(
    client, admin_user, network, settings
):
    """Checked when saved, and resolved again right before each message (the name may change)."""
    settings.NOTIFY_URLS = []
    client.force_login(admin_user)
    network.addresses = ["1.1.1.1"]
    assert add_destination(client, "bark://bark.example.net/DEVICEKEY").status_code == 302

    network.addresses = ["169.254.169.254"]
    response = client.post(reverse("admin:webhooks_notificationtarget_test"))
    assert network.connections == []
    event = AlertEvent.objects.get()
    assert event.delivery == AlertDelivery.FAILED
    assert event.error == f"x (bark://…EKEY): {alerts.MSG_HOST_NOT_ALLOWED}"
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert shown[-1] == str(alerts_admin.MSG_TEST_NOT_SENT % {"error": event.error})


def test_notify_urls_are_checked_at_start_and_again_when_sending(network, settings):
    from django.core.checks import run_checks

    settings.NOTIFY_URLS = [
        "json://127.0.0.1:9/x",
        "bark://10.0.0.5/KEY",
        f"tgram://{BOT_TOKEN}/1",
        "bark://bark.example.net/KEY",
    ]
    errors = [e for e in run_checks() if e.id == "webhooks.E001"]
    assert [e.msg.split(":")[0] for e in errors] == ["NOTIFY_URLS #1 json", "NOTIFY_URLS #2 bark"]

    settings.NOTIFY_URLS = ["bark://bark.example.net/KEY"]
    network.addresses = ["10.0.0.5"]
    thresholds(stock_below=1)
    emptied_pool()
    evaluate()
    assert (
        state(AlertCondition.LOW_STOCK).last_error
        == f"NOTIFY_URLS #1 bark://…/KEY: {alerts.MSG_HOST_NOT_ALLOWED}"
    )
    assert network.connections == []


def test_private_hosts_can_be_allowed_by_the_operator(admin_client, network, settings):
    settings.NOTIFY_ALLOW_PRIVATE_HOSTS = True
    network.addresses = ["10.0.0.5"]
    assert add_destination(admin_client, "bark://bark.lan/DEVICEKEY").status_code == 302
    assert network.connections == []


def test_redirects_are_never_followed_whatever_the_url_says():
    service, problem = alerts._instantiate("bark://bark.example.net/KEY?redirect=yes")
    assert problem is None and service.redirects is False


@pytest.mark.parametrize(
    "address, allowed",
    [
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:10.0.0.5", False),
        ("64:ff9b::a9fe:a9fe", False),
        ("0.0.0.0", False),
        ("240.0.0.1", False),
        ("fe80::1%eth0", False),
        ("100.64.0.1", False),
    ],
)
def test_which_addresses_a_notification_may_go_to(address, allowed):
    assert alerts.address_allowed(address) is allowed


def test_adding_a_destination_shows_a_plain_url_field_and_editing_says_empty_keeps_it(admin_client):
    add = admin_client.get(reverse("admin:webhooks_notificationtarget_add")).content.decode()
    field = re.search(r'<input [^>]*name="new_url"[^>]*>', add).group(0)
    assert 'type="text"' in field and "required" in field
    assert "field-masked_url" not in add  # no "URL: -" above it
    assert str(alerts_admin.HELP_URL_NEW) in add and "keep the current one" not in add

    missing = admin_client.post(
        reverse("admin:webhooks_notificationtarget_add"),
        {"label": "x", "new_url": "", "enabled": "on"},
    )
    assert str(alerts_admin.MSG_URL_REQUIRED) in missing.content.decode()
    refused = admin_client.post(
        reverse("admin:webhooks_notificationtarget_add"),
        {"label": "x", "new_url": f"nonsense://{BOT_TOKEN}", "enabled": "on"},
    )
    assert BOT_TOKEN not in refused.content.decode()  # a plain field, never filled back in

    target = NotificationTarget.objects.create(
        label="ops", url=f"tgram://{BOT_TOKEN}/1", masked_url="tgram://…/1"
    )
    edit = admin_client.get(
        reverse("admin:webhooks_notificationtarget_change", args=[target.pk])
    ).content.decode()
    field = re.search(r'<input [^>]*name="new_url"[^>]*>', edit).group(0)
    assert 'type="password"' in field and "required" not in field
    assert "Leave it empty to keep the current one." in edit and "tgram://…/1" in edit
