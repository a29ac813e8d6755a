"""Staff actions on the pool, through the admin: requeue after editing, retry, release; permissions."""

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from accounts import admin as accounts_admin
from accounts import forms as load_forms
from accounts import services
from accounts.models import Account, AccountStatus, UnusableReason, lookup_hashes
from accounts.parser import MSG_EMAIL_MISMATCH
from devtools import fakes
from tests.factories import AccountFactory
from tests.support.secrets import assert_no_secret
from tests.support.users import staff_with

pytestmark = pytest.mark.django_db

LIST_URL = reverse("admin:accounts_account_changelist")


def requeue_url(account):
    return reverse("admin:accounts_account_requeue", args=[account.pk])


def change_url(account):
    return reverse("admin:accounts_account_change", args=[account.pk])


def rejected(**fields):
    return AccountFactory(
        status=AccountStatus.REJECTED,
        attempts=1,
        last_error="该 Token 没有关联任何 Team 账户",
        **fields,
    )


def material_of(account):
    return {
        f: getattr(account, f)
        for f in ("email", "account_id", "access_token", "session_token", "refresh_token")
    }


def log_messages(account):
    return list(
        LogEntry.objects.filter(object_id=str(account.pk)).values_list("change_message", flat=True)
    )


# --- Requeue after editing ----------------------------------------------------------------------


def test_requeue_page_shows_masked_values_only(admin_client):
    account = rejected()
    html = admin_client.get(requeue_url(account)).content.decode()
    assert (
        "…" + account.access_token[-4:] in html
        and account.email in html
        and account.client_id in html
    )
    assert "该 Token 没有关联任何 Team 账户" in html
    assert_no_secret(html, account.access_token, account.session_token, account.refresh_token)


def test_requeue_with_new_tokens(admin_client, admin_user):
    account = rejected(unknown_attempts=0)
    new_at = fakes.make_access_token(email=account.email, lifetime=timedelta(days=3))
    new_st = fakes.make_session_token()
    response = admin_client.post(
        requeue_url(account), {"access_token": new_at, "session_token": f"  {new_st} "}
    )
    assert response.status_code == 302 and response.url == change_url(account)

    old_refresh = account.refresh_token
    account.refresh_from_db()
    assert (account.status, account.usable, account.last_error) == (
        AccountStatus.AVAILABLE,
        True,
        "",
    )
    assert (account.access_token, account.session_token, account.refresh_token) == (
        new_at,
        new_st,
        old_refresh,
    )
    assert abs(account.at_expires_at - (timezone.now() + timedelta(days=3))) < timedelta(minutes=1)
    assert {f: getattr(account, f) for f in lookup_hashes(**material_of(account))} == lookup_hashes(
        **material_of(account)
    )
    assert (account.unknown_attempts, account.retry_after, account.attempts) == (0, None, 1)
    entry = LogEntry.objects.get(object_id=str(account.pk))
    assert entry.user_id == admin_user.pk
    assert entry.change_message == services.LOG_REQUEUED % "access_token, session_token"
    assert new_at[-20:] not in entry.change_message
    # Picked like any fresh account.
    picked = services.account_reserve_batch(
        count=5,
        lease_id=uuid.uuid4(),
        lease_until=timezone.now() + timedelta(minutes=1),
        now=timezone.now(),
    )
    assert [a.pk for a in picked] == [account.pk]


def test_requeue_with_a_new_identity(admin_client):
    account = rejected()
    new_email, new_workspace = "renamed@example.com", "0b7f2a4c-1d2e-4f3a-9b8c-7d6e5f4a3b2c"
    data = {
        "email": "Renamed@Example.com",
        "access_token": fakes.make_access_token(email=new_email),
        "client_id": "app_NEWCLIENT123",
        "account_id": new_workspace.upper(),
    }
    assert admin_client.post(requeue_url(account), data).status_code == 302
    account.refresh_from_db()
    assert (account.email, account.at_email, account.account_id, account.client_id) == (
        new_email,
        new_email,
        new_workspace,
        "app_NEWCLIENT123",
    )
    assert account.identity_hash == lookup_hashes(**material_of(account))["identity_hash"]
    assert log_messages(account) == [
        services.LOG_REQUEUED % "email, access_token, client_id, account_id"
    ]


def test_requeue_refuses_the_identity_of_another_pool_account(admin_client):
    other = AccountFactory()
    account = rejected()
    data = {"email": other.email, "access_token": fakes.make_access_token(email=other.email)}
    response = admin_client.post(requeue_url(account), data)
    expected = services.MSG_REQUEUE_DUPLICATE % {"id": other.pk, "what": "email and account id"}
    assert expected in response.context["form"].non_field_errors()
    assert Account.objects.filter(
        pk=account.pk, status=AccountStatus.REJECTED, email=account.email
    ).exists()


def test_requeue_with_every_field_blank_keeps_the_account_as_it_is(admin_client):
    account = rejected()
    before = material_of(account)
    follow = admin_client.post(requeue_url(account), {}, follow=True)
    assert (accounts_admin.MSG_REQUEUED % {"account": account.email}) in follow.content.decode()
    account.refresh_from_db()
    assert account.status == AccountStatus.AVAILABLE and material_of(account) == before
    assert log_messages(account) == [services.LOG_REQUEUED_UNCHANGED]


def test_requeue_shows_the_parser_problem_and_never_echoes_the_secret(admin_client):
    account = rejected()
    other_email_at = fakes.make_access_token(email="someone-else@example.com")
    response = admin_client.post(requeue_url(account), {"access_token": other_email_at})
    html = response.content.decode()
    assert response.status_code == 200
    expected = MSG_EMAIL_MISMATCH % {"email": account.email, "at_email": "someone-else@example.com"}
    assert escape(expected) in html
    assert_no_secret(html, other_email_at)
    account.refresh_from_db()
    assert account.status == AccountStatus.REJECTED and log_messages(account) == []


def test_requeue_refuses_a_value_in_the_wrong_box(admin_client):
    account = rejected(session_token=None)
    response = admin_client.post(requeue_url(account), {"access_token": fakes.make_session_token()})
    assert response.context["form"].errors["access_token"] == [
        str(services.MSG_REQUEUE_MISREAD % {"field": "access token"})
    ]
    account.refresh_from_db()
    assert account.status == AccountStatus.REJECTED and account.session_token is None


def test_requeue_refuses_several_values_in_one_box(admin_client):
    account = rejected()
    response = admin_client.post(
        requeue_url(account), {"refresh_token": "rt_one rt_two", "client_id": "app_a,app_b"}
    )
    errors = response.context["form"].errors
    assert errors["refresh_token"] == errors["client_id"] == [str(load_forms.MSG_ONE_VALUE)]
    assert Account.objects.get(pk=account.pk).status == AccountStatus.REJECTED


def test_requeue_refuses_what_the_parser_cannot_read(admin_client):
    account = rejected(session_token=None)
    response = admin_client.post(requeue_url(account), {"session_token": "eyJ-not-a-token"})
    errors = response.context["form"].non_field_errors()
    assert len(errors) == 1 and "is not recognised" in errors[0]
    assert Account.objects.get(pk=account.pk).session_token is None


def test_requeue_refuses_a_duplicate_of_another_pool_account(admin_client):
    other = AccountFactory()
    account = rejected()
    response = admin_client.post(requeue_url(account), {"session_token": other.session_token})
    expected = services.MSG_REQUEUE_DUPLICATE % {"id": other.pk, "what": "session token"}
    assert expected in response.context["form"].non_field_errors()
    assert_no_secret(response.content.decode(), other.session_token)
    account.refresh_from_db()
    assert account.status == AccountStatus.REJECTED and account.session_token != other.session_token


def test_requeue_refuses_an_account_that_still_could_not_be_imported(admin_client):
    account = rejected(session_token=None, refresh_token=None)
    expired = fakes.make_access_token(
        email=account.email, expires_at=timezone.now() - timedelta(hours=1)
    )
    response = admin_client.post(requeue_url(account), {"access_token": expired})
    errors = response.context["form"].non_field_errors()
    assert len(errors) == 1 and errors[0].startswith(
        "Not requeued, it could still not be imported:"
    )
    assert Account.objects.get(pk=account.pk).status == AccountStatus.REJECTED


def test_only_a_rejected_account_can_be_requeued(admin_client):
    account = AccountFactory()
    follow = admin_client.post(requeue_url(account), {}, follow=True)
    assert (services.MSG_NOT_REJECTED % {"status": "available"}) in follow.content.decode()
    with pytest.raises(services.RequeueRefused):
        services.account_requeue(account_id=account.pk, changes={}, by=None)
    assert Account.objects.get(pk=account.pk).status == AccountStatus.AVAILABLE


def test_requeue_keeps_the_knowledge_of_an_unknown_outcome():
    account = rejected(unknown_attempts=3)
    services.account_requeue(account_id=account.pk, changes={}, by=None)
    account.refresh_from_db()
    assert account.unknown_attempts == 1 and account.retry_after is not None


# --- Retry selected -------------------------------------------------------------------------------


def test_retry_puts_rejected_and_held_accounts_back(admin_client, admin_user):
    was_rejected = rejected()
    held = AccountFactory(
        usable=False,
        unusable_reason=UnusableReason.UNKNOWN_OUTCOMES,
        unknown_attempts=4,
        attempts=4,
        last_error="timeout",
    )
    flagged = AccountFactory(usable=False, unusable_reason=UnusableReason.AT_EXPIRED)
    consumed = AccountFactory(status=AccountStatus.CONSUMED, consumed_at=timezone.now())
    response = admin_client.post(
        LIST_URL,
        {
            "action": "retry_selected",
            "_selected_action": [was_rejected.pk, held.pk, flagged.pk, consumed.pk],
        },
        follow=True,
    )
    html = response.content.decode()
    assert accounts_admin.MSG_RETRIED % {"n": 2} in html
    assert accounts_admin.MSG_NOT_RETRIED % {"n": 2} in html
    # Which ones, and why: the flagged one needs fresh tokens, the consumed one is in the manager.
    which = re.search(r"Not retried: (.*?)\.</li>", html).group(1)
    assert (
        f"{flagged.email} (its tokens cannot be imported (" in which
        and "load it again with fresh tokens" in which
    )
    assert f"{consumed.email} (already in the manager)" in which
    assert was_rejected.email not in which and held.email not in which

    for account in (was_rejected, held, flagged, consumed):
        account.refresh_from_db()
    assert (was_rejected.status, was_rejected.unknown_attempts, was_rejected.retry_after) == (
        AccountStatus.AVAILABLE,
        0,
        None,
    )
    assert (
        held.status,
        held.usable,
        held.unusable_reason,
        held.unknown_attempts,
        held.last_error,
    ) == (
        AccountStatus.AVAILABLE,
        True,
        "",
        1,
        "",
    )
    assert held.retry_after <= timezone.now() and held.attempts == 4
    assert (flagged.usable, consumed.status) == (False, AccountStatus.CONSUMED)
    assert sorted(LogEntry.objects.values_list("object_id", "change_message")) == sorted(
        [(str(was_rejected.pk), services.LOG_RETRIED), (str(held.pk), services.LOG_RETRIED)]
    )
    # The held account is re-sent first (it may have landed); the rejected one as fresh stock.
    now = timezone.now()
    lease = {"lease_id": uuid.uuid4(), "lease_until": now + timedelta(minutes=1), "now": now}
    assert [a.pk for a in services.account_reserve_batch(count=5, unresolved=True, **lease)] == [
        held.pk
    ]
    assert [a.pk for a in services.account_reserve_batch(count=5, **lease)] == [was_rejected.pk]


# --- Release a stuck reservation -------------------------------------------------------------------


def reserved(*, lease_left: timedelta):
    return AccountFactory(
        status=AccountStatus.RESERVED,
        lease_id=uuid.uuid4(),
        lease_expires_at=timezone.now() + lease_left,
        attempts=2,
    )


def test_release_returns_an_expired_reservation_as_an_unknown_attempt(admin_client):
    stuck = reserved(lease_left=-timedelta(minutes=1))
    live = reserved(lease_left=timedelta(minutes=5))
    idle = AccountFactory()
    response = admin_client.post(
        LIST_URL,
        {"action": "release_selected", "_selected_action": [stuck.pk, live.pk, idle.pk]},
        follow=True,
    )
    html = response.content.decode()
    assert accounts_admin.MSG_RELEASED % {"n": 1} in html
    assert accounts_admin.MSG_IN_FLIGHT % {"n": 1} in html
    assert accounts_admin.MSG_NOT_RESERVED % {"n": 1} in html

    for account in (stuck, live, idle):
        account.refresh_from_db()
    assert (stuck.status, stuck.lease_id, stuck.lease_expires_at) == (
        AccountStatus.AVAILABLE,
        None,
        None,
    )
    assert (stuck.attempts, stuck.unknown_attempts, stuck.last_error) == (
        3,
        1,
        services.MSG_LEASE_EXPIRED,
    )
    assert stuck.retry_after <= timezone.now()
    assert live.status == AccountStatus.RESERVED and live.lease_id is not None
    assert log_messages(stuck) == [services.LOG_RELEASED] and log_messages(live) == []


def test_a_reservation_in_flight_alone_is_refused_with_a_message(admin_client):
    live = reserved(lease_left=timedelta(minutes=5))
    html = admin_client.post(
        LIST_URL, {"action": "release_selected", "_selected_action": [live.pk]}, follow=True
    ).content.decode()
    assert accounts_admin.MSG_IN_FLIGHT % {"n": 1} in html
    assert "Released" not in html
    assert Account.objects.get(pk=live.pk).status == AccountStatus.RESERVED


# --- Permissions ---------------------------------------------------------------------------------


def test_without_the_requeue_permission_nothing_is_offered_and_everything_is_refused(client):
    user = staff_with("accounts.view_account", "accounts.change_account")
    client.force_login(user)
    account = rejected()
    stuck = reserved(lease_left=-timedelta(minutes=1))

    listing = client.get(LIST_URL).content.decode()
    assert 'value="retire_selected"' in listing
    assert 'value="retry_selected"' not in listing and 'value="release_selected"' not in listing
    assert 'id="requeue-link"' not in client.get(change_url(account)).content.decode()
    assert client.get(requeue_url(account)).status_code == 403
    assert client.post(requeue_url(account), {}).status_code == 403
    for action, target in (("retry_selected", account), ("release_selected", stuck)):
        assert (
            client.post(LIST_URL, {"action": action, "_selected_action": [target.pk]}).status_code
            == 403
        )
    assert Account.objects.get(pk=account.pk).status == AccountStatus.REJECTED
    assert Account.objects.get(pk=stuck.pk).status == AccountStatus.RESERVED
    assert not LogEntry.objects.exists()


def test_with_the_requeue_permission_the_actions_are_offered(client):
    user = staff_with("accounts.view_account", "accounts.requeue_account")
    client.force_login(user)
    account = rejected()
    listing = client.get(LIST_URL).content.decode()
    assert 'value="retry_selected"' in listing and 'value="release_selected"' in listing
    assert 'id="requeue-link"' in client.get(change_url(account)).content.decode()
    assert 'id="requeue-link"' not in client.get(change_url(AccountFactory())).content.decode()
    assert client.post(requeue_url(account), {}).status_code == 302
    assert Account.objects.get(pk=account.pk).status == AccountStatus.AVAILABLE


def test_push_needs_its_permission_and_is_hidden_without_it(client):
    client.force_login(staff_with("webhooks.view_replenishmentrun"))
    runs = reverse("admin:webhooks_replenishmentrun_changelist")
    push = reverse("admin:webhooks_replenishmentrun_push")
    assert push not in client.get(runs).content.decode()
    assert client.post(push, {"accounts": 1}).status_code == 403
    client.force_login(
        staff_with(
            "webhooks.view_replenishmentrun",
            "webhooks.push_accounts",
            username="pusher",
        )
    )
    assert push in client.get(runs).content.decode()


def test_only_who_may_change_the_policy_can(client):
    from webhooks.selectors import policy_get

    policy = policy_get()
    url = reverse("admin:webhooks_replenishmentpolicy_change", args=[policy.pk])
    form = {
        "seats_per_account": 6,
        "margin_seats": 5,
        "max_accounts_per_event": 10,
        "max_accounts_per_hour": 50,
        "import_mode": "single",
        "retry_backoff": "60,300,1800",
    }

    client.force_login(staff_with(username="nobody"))
    assert client.get(reverse("admin:webhooks_replenishmentpolicy_changelist")).status_code == 403
    assert client.post(url, form).status_code == 403

    client.force_login(staff_with("webhooks.view_replenishmentpolicy", username="viewer"))
    page = client.get(url).content.decode()
    assert 'name="_save"' not in page and 'name="seats_per_account"' not in page
    assert client.post(url, form).status_code == 403
    assert policy_get().seats_per_account == 5

    client.force_login(staff_with("webhooks.change_replenishmentpolicy", username="admin2"))
    assert 'name="_save"' in client.get(url).content.decode()
    assert client.post(url, form).status_code == 302
    assert policy_get().seats_per_account == 6
