"""Destinations that would reach inside the network (SSRF): refused when saved, at start, and
again right before each message. No test here opens a socket: names resolve through a stub, and
any connection attempt fails the test. Refusals must come before any connection.
"""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from alerts import admin as alerts_admin
from alerts import destinations
from alerts.models import AlertCondition, AlertDelivery, AlertEvent, NotificationTarget
from tests.support.alerts import (
    BOT_TOKEN,
    add_destination,
    emptied_pool,
    evaluate,
    state,
    thresholds,
)

# The messages are compared with their English text.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("notifications_in_english"),
]


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
        and str(destinations.MSG_HOST_NOT_ALLOWED) in response.content.decode()
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
    assert str(getattr(destinations, problem)) in response.content.decode()
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
    response = client.post(reverse("admin:alerts_notificationtarget_test"))
    assert network.connections == []
    event = AlertEvent.objects.get()
    assert event.delivery == AlertDelivery.FAILED
    assert event.error == f"x (bark://…EKEY): {destinations.MSG_HOST_NOT_ALLOWED}"
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
        == f"NOTIFY_URLS #1 bark://…/KEY: {destinations.MSG_HOST_NOT_ALLOWED}"
    )
    assert network.connections == []


def test_private_hosts_can_be_allowed_by_the_operator(admin_client, network, settings):
    settings.NOTIFY_ALLOW_PRIVATE_HOSTS = True
    network.addresses = ["10.0.0.5"]
    assert add_destination(admin_client, "bark://bark.lan/DEVICEKEY").status_code == 302
    assert network.connections == []


def test_redirects_are_never_followed_whatever_the_url_says():
    service, problem = destinations.notification_service("bark://bark.example.net/KEY?redirect=yes")
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
    assert destinations.address_allowed(address) is allowed
