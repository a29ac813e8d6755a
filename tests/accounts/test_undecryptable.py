"""Rows that no configured key opens: held for staff at the pick, shown as "cannot be decrypted"
everywhere, reported at start-up and by the dashboard, and never a 500."""

import uuid
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts import crypto, services
from accounts.checks import pool_key_census_check
from accounts.models import Account, AccountStatus, UnusableReason
from accounts.selectors import account_key_census
from tests.factories import FOREIGN_KEY, AccountFactory, account_sealed_with_foreign_key

pytestmark = pytest.mark.django_db

CANNOT = "cannot be decrypted"
LIST_URL = reverse("admin:accounts_account_changelist")


def foreign_key_id() -> str:
    return crypto._build_key(crypto._decode_key(FOREIGN_KEY, 1)).key_id.hex()


def reserve(count):
    now = timezone.now()
    lease = uuid.uuid4()
    return lease, services.account_reserve_batch(
        count=count, lease_id=lease, lease_until=now + timedelta(minutes=5), now=now
    )


# --- The pick ---------------------------------------------------------------------------------


def test_an_account_no_key_opens_is_held_for_staff_and_the_pick_takes_the_next_ones(settings):
    sealed = account_sealed_with_foreign_key(settings)
    first, second, third = AccountFactory.create_batch(3)
    lease, taken = reserve(2)

    assert [a.pk for a in taken] == [first.pk, second.pk]
    assert all(a.lease_id == lease and isinstance(a.access_token, str) for a in taken)
    held = Account.objects.get(pk=sealed.pk)
    assert (held.status, held.usable, held.unusable_reason) == (
        AccountStatus.AVAILABLE,
        False,
        UnusableReason.KEY_MISSING,
    )
    assert (held.lease_id, held.lease_expires_at, held.attempts) == (None, None, 0)
    assert (
        f"sealed with a key this service does not have (key id {foreign_key_id()})"
        in held.last_error
    )
    assert Account.objects.get(pk=third.pk).status == AccountStatus.AVAILABLE
    assert reserve(5)[1] == [third]  # never picked again


def test_a_pool_of_only_sealed_accounts_reserves_nothing_and_holds_them_all(settings):
    sealed = [account_sealed_with_foreign_key(settings) for _ in range(3)]
    assert reserve(2)[1] == []
    assert set(
        Account.objects.filter(pk__in=[a.pk for a in sealed]).values_list(
            "unusable_reason", flat=True
        )
    ) == {UnusableReason.KEY_MISSING}
    assert not Account.objects.filter(status=AccountStatus.RESERVED).exists()


def test_a_tampered_account_is_held_with_its_own_reason():
    account = AccountFactory()
    with connection.cursor() as cursor:
        cursor.execute("SELECT session_token FROM accounts_account WHERE id = %s", [account.pk])
        blob = bytearray(cursor.fetchone()[0])
        blob[-1] ^= 1
        cursor.execute(
            "UPDATE accounts_account SET session_token = %s WHERE id = %s",
            [bytes(blob), account.pk],
        )
    assert reserve(1)[1] == []
    held = Account.objects.get(pk=account.pk)
    assert (held.usable, held.unusable_reason) == (False, UnusableReason.UNDECRYPTABLE)
    assert "fail authentication" in held.last_error


def test_a_held_account_goes_back_to_the_pool_when_its_key_is_restored_and_staff_retry_it(
    settings, admin_user
):
    sealed = account_sealed_with_foreign_key(settings)
    reserve(1)
    settings.POOL_ENCRYPTION_KEY = f"{settings.POOL_ENCRYPTION_KEY},{FOREIGN_KEY}"
    assert [a.pk for a in services.account_retry(account_ids=[sealed.pk], by=admin_user)] == [
        sealed.pk
    ]
    assert [a.pk for a in reserve(1)[1]] == [sealed.pk]


def test_requeue_of_a_rejected_account_that_cannot_be_decrypted_asks_for_the_tokens_again(
    settings, admin_user
):
    sealed = account_sealed_with_foreign_key(settings, status=AccountStatus.REJECTED)
    with pytest.raises(services.RequeueRefused) as refused:
        services.account_requeue(account_id=sealed.pk, changes={}, by=admin_user)
    assert {field for field, _ in refused.value.problems} == {
        "access_token",
        "session_token",
        "refresh_token",
    }
    assert Account.objects.get(pk=sealed.pk).status == AccountStatus.REJECTED


# --- Views ------------------------------------------------------------------------------------


def test_admin_list_and_change_page_show_cannot_be_decrypted(admin_client, settings):
    sealed = account_sealed_with_foreign_key(settings, email="")
    AccountFactory()
    listing = admin_client.get(LIST_URL)
    assert listing.status_code == 200 and CANNOT in listing.content.decode()
    page = admin_client.get(reverse("admin:accounts_account_change", args=[sealed.pk]))
    assert page.status_code == 200 and page.content.decode().count(CANNOT) >= 3
    saved = admin_client.post(
        reverse("admin:accounts_account_change", args=[sealed.pk]), {"notes": "key lost"}
    )
    assert saved.status_code == 302 and Account.objects.get(pk=sealed.pk).notes == "key lost"


def test_admin_actions_work_on_rows_that_cannot_be_decrypted(admin_client, settings):
    sealed = account_sealed_with_foreign_key(settings, email="")
    retire = {"action": "retire_selected", "_selected_action": [sealed.pk]}
    assert 'id="retire-form"' in admin_client.post(LIST_URL, retire).content.decode()  # asks first
    retired = admin_client.post(LIST_URL, {**retire, "confirmed": "yes"})
    assert retired.status_code == 302
    assert Account.objects.get(pk=sealed.pk).status == AccountStatus.RETIRED
    rejected = account_sealed_with_foreign_key(settings, status=AccountStatus.REJECTED)
    assert (
        admin_client.post(
            LIST_URL, {"action": "retry_selected", "_selected_action": [rejected.pk]}
        ).status_code
        == 302
    )
    assert Account.objects.get(pk=rejected.pk).status == AccountStatus.AVAILABLE
    Account.objects.filter(pk=rejected.pk).update(status=AccountStatus.REJECTED)
    requeue_url = reverse("admin:accounts_account_requeue", args=[rejected.pk])
    page = admin_client.get(requeue_url)
    assert page.status_code == 200 and CANNOT in page.content.decode()
    refused = admin_client.post(requeue_url, {"email": ""})
    assert (
        refused.status_code == 200
        and "cannot be decrypted with the configured keys" in refused.content.decode()
    )


def test_api_list_detail_and_retire_show_cannot_be_decrypted(admin_client, settings):
    sealed = account_sealed_with_foreign_key(settings)
    listing = admin_client.get("/api/accounts/")
    assert listing.status_code == 200
    (row,) = listing.json()["results"]
    assert [
        row[f] for f in ("access_token_masked", "session_token_masked", "refresh_token_masked")
    ] == [CANNOT] * 3
    assert admin_client.get(f"/api/accounts/{sealed.pk}/").json()["access_token_masked"] == CANNOT
    retired = admin_client.post(
        "/api/accounts/retire/", {"ids": [sealed.pk]}, content_type="application/json"
    )
    assert retired.status_code == 200 and retired.json()["retired"] == [sealed.pk]


def test_csv_exports_answer_with_rows_that_cannot_be_decrypted(admin_client, settings):
    from webhooks.models import AttemptOutcome, ImportAttempt

    now = timezone.now()
    sealed = account_sealed_with_foreign_key(
        settings, status=AccountStatus.CONSUMED, consumed_at=now
    )
    ImportAttempt.objects.create(account=sealed, outcome=AttemptOutcome.CONSUMED)
    url = reverse("admin:webhooks_importattempt_export")
    today = timezone.localdate().isoformat()
    for what in ("attempts", "consumed"):
        response = admin_client.get(url, {"what": what, "first": today, "last": today})
        body = b"".join(response.streaming_content).decode()
        assert response.status_code == 200 and sealed.email in body
    attempts = admin_client.get(reverse("admin:webhooks_importattempt_changelist"))
    assert attempts.status_code == 200


def test_the_dashboard_warns_about_key_ids_that_are_not_configured(admin_client, settings):
    AccountFactory()
    cache.clear()
    assert 'id="dashboard-key-warnings"' not in admin_client.get("/admin/").content.decode()
    account_sealed_with_foreign_key(settings)
    cache.clear()  # the dashboard reads the census at most once a minute
    html = admin_client.get("/admin/").content.decode()
    assert 'id="dashboard-key-warnings"' in html and f"Key id {foreign_key_id()}" in html
    assert "sealed rows of accounts: 1." in html


# --- Start-up, rotation -----------------------------------------------------------------------


def test_system_check_warns_about_key_ids_not_configured_with_their_row_counts(settings):
    AccountFactory()
    assert pool_key_census_check(None) == []
    account_sealed_with_foreign_key(settings)
    account_sealed_with_foreign_key(settings)
    (warning,) = pool_key_census_check(None)
    assert warning.id == "accounts.W001" and warning.level == 30  # a warning: it stops nothing
    assert (
        f"Key id {foreign_key_id()}, which is not in POOL_ENCRYPTION_KEY, sealed rows of accounts: 2."
        in warning.msg
    )


def test_census_counts_rows_per_key_id_in_every_encrypted_table(settings):
    from alerts.models import NotificationTarget

    AccountFactory.create_batch(2)
    account_sealed_with_foreign_key(settings)
    NotificationTarget.objects.create(url="tgram://1/2", masked_url="tgram://…")
    census = {(c.table, c.key_id): (c.rows, c.configured) for c in account_key_census()}
    current = crypto.current_key_id().hex()
    assert census[("accounts", current)] == (2, True)
    assert census[("accounts", foreign_key_id())] == (1, False)
    assert census[("notification destinations", current)] == (1, True)


def test_check_pool_keys_refuses_only_when_no_row_opens(settings, capsys):
    call_command("check_pool_keys")  # an empty database: nothing to refuse
    account_sealed_with_foreign_key(settings)
    AccountFactory()
    call_command("check_pool_keys")  # some rows open: a warning, not a refusal
    assert "NOT CONFIGURED" in capsys.readouterr().out
    Account.objects.filter(
        pk__in=[a.pk for a in Account.objects.all() if isinstance(a.access_token, str)]
    ).delete()
    with pytest.raises(CommandError) as refused:
        call_command("check_pool_keys")
    assert "none of them opens with the configured POOL_ENCRYPTION_KEY" in str(refused.value)


def test_rotate_check_lists_rows_per_key_and_fails_while_any_are_under_an_older_key(
    settings, capsys
):
    old_key = settings.POOL_ENCRYPTION_KEY
    AccountFactory.create_batch(2)
    call_command("rotate_pool_key", "--check")
    assert "(newest): 2" in capsys.readouterr().out

    settings.POOL_ENCRYPTION_KEY = f"{FOREIGN_KEY},{old_key}"
    with pytest.raises(SystemExit) as failed:
        call_command("rotate_pool_key", "--check")
    assert failed.value.code == 1
    out = capsys.readouterr()
    assert (
        "(older, configured)" in out.out
        and "Rows still under a key other than the newest: 2." in out.err
    )

    call_command("rotate_pool_key")
    call_command("rotate_pool_key", "--check")
    assert f"accounts under key id {foreign_key_id()} (newest): 2" in capsys.readouterr().out


def test_rotation_leaves_rows_no_key_opens_as_they_are(settings, capsys):
    sealed = account_sealed_with_foreign_key(settings)
    AccountFactory()
    settings.POOL_ENCRYPTION_KEY = f"{crypto.generate_key()},{settings.POOL_ENCRYPTION_KEY}"
    call_command("rotate_pool_key")
    captured = capsys.readouterr()
    assert (
        "Re-encrypted 1 of 2 accounts" in captured.out
        and "1 rows were left as they are" in captured.err
    )
    settings.POOL_ENCRYPTION_KEY = FOREIGN_KEY
    assert isinstance(
        Account.objects.get(pk=sealed.pk).access_token, str
    )  # still opens with its own key
