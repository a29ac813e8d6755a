import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import crypto
from accounts.models import Account, AccountBatch, lookup_hashes
from accounts.services import account_batch_stage, account_load
from devtools import fakes
from tests.factories import AccountFactory
from tests.support.keys import OTHER_KEY, THIRD_KEY

pytestmark = pytest.mark.django_db


def _account_reads(queries) -> int:
    return sum(
        1 for q in queries if q["sql"].startswith("SELECT") and '"accounts_account"' in q["sql"]
    )


def _key_ids(pk):
    from accounts.services import _raw_key_ids

    return _raw_key_ids(Account, [pk], ("access_token", "session_token", "refresh_token"))[pk]


def test_rotation_keeps_every_token_readable_and_moves_every_row_to_the_newest_key(
    settings, capsys
):
    old_key = settings.POOL_ENCRYPTION_KEY
    accounts = AccountFactory.create_batch(7)
    staged = account_batch_stage(content="a@x.com,eyJ…,,,", label="waiting")
    settings.POOL_ENCRYPTION_KEY = f"{OTHER_KEY},{old_key}"

    call_command("rotate_pool_key")
    assert "Re-encrypted 7 of 7 accounts and 1 other encrypted rows" in capsys.readouterr().out

    settings.POOL_ENCRYPTION_KEY = OTHER_KEY  # the old key is gone now
    for before in accounts:
        after = Account.objects.get(pk=before.pk)
        assert (after.access_token, after.session_token, after.refresh_token) == (
            before.access_token,
            before.session_token,
            before.refresh_token,
        )
        assert _key_ids(after.pk) == {crypto.current_key_id()}
        expected = lookup_hashes(
            email=after.email,
            account_id=after.account_id,
            access_token=after.access_token,
            session_token=after.session_token,
            refresh_token=after.refresh_token,
        )
        assert {f: getattr(after, f) for f in expected} == expected
    assert AccountBatch.objects.get(pk=staged.pk).content == "a@x.com,eyJ…,,,"

    call_command("rotate_pool_key")
    assert "Re-encrypted 0 of 7 accounts and 0 other" in capsys.readouterr().out


def test_duplicates_are_found_while_a_rotation_is_half_done(settings):
    existing = AccountFactory()
    settings.POOL_ENCRYPTION_KEY = f"{THIRD_KEY},{settings.POOL_ENCRYPTION_KEY}"
    line = fakes.render_line(
        {
            "email": existing.email,
            "access_token": existing.access_token,
            "session_token": existing.session_token,
            "refresh_token": existing.refresh_token,
            "client_id": existing.client_id,
            "account_id": None,
        },
        "delimited-dash",
    )
    report = account_load(lines=[line], batch=None, dry_run=True)
    assert (report.created, report.duplicates) == (0, 1)


def test_rotation_reseals_encrypted_columns_of_other_apps(settings):
    """Notification URLs borrow the pool's encryption: they must survive removing the old key."""
    from alerts.models import NotificationTarget

    target = NotificationTarget.objects.create(
        label="ops", url="json://127.0.0.1:9/hook", masked_url="json://…hook"
    )
    settings.POOL_ENCRYPTION_KEY = f"{OTHER_KEY},{settings.POOL_ENCRYPTION_KEY}"
    call_command("rotate_pool_key")
    settings.POOL_ENCRYPTION_KEY = OTHER_KEY
    assert NotificationTarget.objects.get(pk=target.pk).url == "json://127.0.0.1:9/hook"


def test_rotation_reseals_each_other_row_with_its_own_value_and_counts_them(settings):
    """Rows already under the newest key are skipped, the others each keep their own value."""
    from accounts.services import account_rotate_keys
    from alerts.models import NotificationTarget

    old_key = settings.POOL_ENCRYPTION_KEY
    settings.POOL_ENCRYPTION_KEY = OTHER_KEY
    current = NotificationTarget.objects.create(
        label="new", url="json://127.0.0.1:9/new", masked_url="json://…new"
    )
    settings.POOL_ENCRYPTION_KEY = old_key
    first = NotificationTarget.objects.create(
        label="a", url="json://127.0.0.1:9/a", masked_url="json://…a"
    )
    second = NotificationTarget.objects.create(
        label="b", url="json://127.0.0.1:9/b", masked_url="json://…b"
    )
    settings.POOL_ENCRYPTION_KEY = f"{OTHER_KEY},{old_key}"

    result = account_rotate_keys()

    assert (result.key_id, result.others_rewritten) == (crypto.current_key_id().hex(), 2)
    settings.POOL_ENCRYPTION_KEY = OTHER_KEY
    urls = dict(NotificationTarget.objects.values_list("pk", "url"))
    assert urls == {
        current.pk: "json://127.0.0.1:9/new",
        first.pk: "json://127.0.0.1:9/a",
        second.pk: "json://127.0.0.1:9/b",
    }


def test_rows_no_configured_key_opens_are_left_as_they_are_and_counted_in_every_table(settings):
    from accounts.services import account_rotate_keys
    from alerts.models import NotificationTarget

    old_key = settings.POOL_ENCRYPTION_KEY
    settings.POOL_ENCRYPTION_KEY = THIRD_KEY
    lost_account, _ = AccountFactory.create_batch(2)
    lost_target = NotificationTarget.objects.create(
        label="lost", url="json://127.0.0.1:9/lost", masked_url="json://…lost"
    )
    settings.POOL_ENCRYPTION_KEY = old_key
    AccountFactory()
    settings.POOL_ENCRYPTION_KEY = f"{OTHER_KEY},{old_key}"

    result = account_rotate_keys()

    assert (result.examined, result.rewritten, result.unopenable) == (3, 1, 3)
    settings.POOL_ENCRYPTION_KEY = THIRD_KEY  # the missing key is back: nothing was lost
    assert Account.objects.get(pk=lost_account.pk).access_token == lost_account.access_token
    assert NotificationTarget.objects.get(pk=lost_target.pk).url == "json://127.0.0.1:9/lost"


def test_rotation_reads_the_accounts_a_chunk_at_a_time_never_row_by_row(settings):
    from accounts.services import account_rotate_keys

    AccountFactory.create_batch(3)
    settings.POOL_ENCRYPTION_KEY = f"{OTHER_KEY},{settings.POOL_ENCRYPTION_KEY}"
    with CaptureQueriesContext(connection) as queries:
        assert account_rotate_keys().rewritten == 3
    # The chunk, its stored headers, and the empty chunk after it.
    assert _account_reads(queries) == 3
