"""Alerts in the admin: thresholds, destinations (masked, encrypted), states, history, the test
button, each behind its permission.

Transactional tests: notifications leave on commit, as they do in production.
"""

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.db import connection
from django.urls import reverse

from alerts import admin as alerts_admin
from alerts import delivery, destinations, evaluation
from alerts.models import (
    AlertCondition,
    AlertEvent,
    AlertEventKind,
    AlertSettings,
    NotificationTarget,
)
from tests.support.alerts import BOT_TOKEN, SENT, emptied_pool, evaluate, thresholds
from tests.support.users import staff_with

# The messages are compared with their English text.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("notifications_in_english"),
]


def test_the_test_button_sends_one_notification(client, admin_user, receiver):
    client.force_login(admin_user)
    changelist = reverse("admin:alerts_notificationtarget_changelist")
    page = client.get(changelist).content.decode()
    assert (
        'id="test-notification-form"' in page
        and "bark://…hook" in page
        and receiver.url() not in page
    )

    button = reverse("admin:alerts_notificationtarget_test")
    response = client.post(button)
    assert response.status_code == 302 and response.url == changelist
    assert receiver.titles == [str(delivery.TITLE_TEST)]
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
    response = client.post(reverse("admin:alerts_notificationtarget_test"))
    expected = alerts_admin.MSG_TEST_NOT_SENT % {"error": delivery.MSG_NO_DESTINATION}
    assert [str(m) for m in get_messages(response.wsgi_request)] == [str(expected)]


def test_the_test_button_needs_the_permission(client, receiver):
    viewer = staff_with("alerts.view_notificationtarget", username="viewer")
    client.force_login(viewer)
    assert (
        'id="test-notification-form"'
        not in client.get(reverse("admin:alerts_notificationtarget_changelist")).content.decode()
    )
    assert client.post(reverse("admin:alerts_notificationtarget_test")).status_code == 403
    assert receiver.posts == []


def test_destinations_are_masked_in_the_admin_and_encrypted_at_rest(client, admin_user):
    client.force_login(admin_user)
    add = reverse("admin:alerts_notificationtarget_add")
    url = f"tgram://{BOT_TOKEN}/987654321"

    refused = client.post(
        add, {"label": "ops", "new_url": f"nonsense://{BOT_TOKEN}", "enabled": "on"}
    )
    assert refused.status_code == 200 and BOT_TOKEN not in refused.content.decode()
    assert str(destinations.MSG_SCHEME_NOT_ALLOWED) in refused.content.decode()
    unusable = client.post(
        add, {"label": "ops", "new_url": "tgram://not-a-bot-token", "enabled": "on"}
    )
    assert str(destinations.MSG_URL_NOT_RECOGNISED) in unusable.content.decode()
    assert client.post(add, {"label": "ops", "new_url": "", "enabled": "on"}).status_code == 200

    assert client.post(add, {"label": "ops", "new_url": url, "enabled": "on"}).status_code == 302
    target = NotificationTarget.objects.get()
    assert (target.url, target.masked_url) == (url, "tgram://…4321")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT url FROM {NotificationTarget._meta.db_table}")
        assert BOT_TOKEN.encode() not in bytes(cursor.fetchone()[0])

    change = reverse("admin:alerts_notificationtarget_change", args=[target.pk])
    assert (
        client.post(change, {"label": "ops room", "new_url": "", "enabled": "on"}).status_code
        == 302
    )
    assert NotificationTarget.objects.get().url == url  # an empty field keeps the URL

    listing = client.get(reverse("admin:alerts_notificationtarget_changelist")).content.decode()
    assert "tgram://…4321" in listing
    for page in (
        listing,
        client.get(change).content.decode(),
        client.get(change + "../history/").content.decode(),
    ):
        assert BOT_TOKEN not in page and "AAEhBOweik6ad9r" not in page
    for entry in LogEntry.objects.all():
        assert BOT_TOKEN not in entry.object_repr + entry.change_message


def test_thresholds_change_only_with_the_change_permission(client, admin_user):
    viewer = staff_with("alerts.view_alertsettings", username="viewer")
    client.force_login(viewer)
    listing = client.get(reverse("admin:alerts_alertsettings_changelist"))
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
    states = admin_client.get(reverse("admin:alerts_alertstate_changelist"))
    events = admin_client.get(reverse("admin:alerts_alertevent_changelist"))
    assert states.status_code == events.status_code == 200
    assert str(evaluation.TITLES[AlertCondition.LOW_STOCK]) in events.content.decode()


def test_adding_a_destination_shows_a_plain_url_field_and_editing_says_empty_keeps_it(admin_client):
    add = admin_client.get(reverse("admin:alerts_notificationtarget_add")).content.decode()
    field = re.search(r'<input [^>]*name="new_url"[^>]*>', add).group(0)
    assert 'type="text"' in field and "required" in field
    assert "field-masked_url" not in add  # no "URL: -" above it
    assert str(alerts_admin.HELP_URL_NEW) in add and "keep the current one" not in add

    missing = admin_client.post(
        reverse("admin:alerts_notificationtarget_add"),
        {"label": "x", "new_url": "", "enabled": "on"},
    )
    assert str(alerts_admin.MSG_URL_REQUIRED) in missing.content.decode()
    refused = admin_client.post(
        reverse("admin:alerts_notificationtarget_add"),
        {"label": "x", "new_url": f"nonsense://{BOT_TOKEN}", "enabled": "on"},
    )
    assert BOT_TOKEN not in refused.content.decode()  # a plain field, never filled back in

    target = NotificationTarget.objects.create(
        label="ops", url=f"tgram://{BOT_TOKEN}/1", masked_url="tgram://…/1"
    )
    edit = admin_client.get(
        reverse("admin:alerts_notificationtarget_change", args=[target.pk])
    ).content.decode()
    field = re.search(r'<input [^>]*name="new_url"[^>]*>', edit).group(0)
    assert 'type="password"' in field and "required" not in field
    assert "Leave it empty to keep the current one." in edit and "tgram://…/1" in edit


@pytest.mark.parametrize(
    "url",
    ["admin:alerts_alertsettings_changelist", "admin:webhooks_replenishmentpolicy_changelist"],
)
def test_a_one_row_page_refuses_staff_without_its_permission_before_redirecting(client, url):
    """Both one-row pages (alert thresholds, the policy) share one admin: the thresholds page
    redirected anyone to the row and left the refusal to the row's page."""
    client.force_login(staff_with(username="nobody"))
    assert client.get(reverse(url)).status_code == 403
