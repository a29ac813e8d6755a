"""Each ciphertext is bound to its table and column (AES-GCM associated data); values in the old
format still open until a migration or a rotation re-seals them; a rotation never loses an edit."""

import os
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts import crypto
from accounts.models import Account
from tests.factories import AccountFactory
from tests.support.keys import OTHER_KEY


def seal_v1(plaintext: str) -> bytes:
    """A value as the previous format sealed it: only the header was authenticated."""
    key = crypto._keyring()[0]
    header = crypto.FORMAT_V1 + key.key_id
    nonce = os.urandom(crypto.NONCE_BYTES)
    return header + nonce + key.aead.encrypt(nonce, plaintext.encode(), header)


def seal_v2(plaintext: str, context: str) -> bytes:
    """A value sealed as the current format is documented: the header, a NUL and the context
    authenticated. Stored values depend on it, so the code may never drift from it."""
    key = crypto._keyring()[0]
    header = crypto.FORMAT_V2 + key.key_id
    nonce = os.urandom(crypto.NONCE_BYTES)
    return (
        header
        + nonce
        + key.aead.encrypt(nonce, plaintext.encode(), header + b"\x00" + context.encode())
    )


def raw(table: str, column: str, pk: int) -> bytes:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return bytes(cursor.fetchone()[0])


def write_raw(table: str, column: str, pk: int, blob: bytes) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [blob, pk])


def test_a_value_opens_only_in_the_context_it_was_sealed_for():
    blob = crypto.encrypt("rt_secret-value", context="accounts_account.refresh_token")
    assert blob[:1] == crypto.FORMAT_V2
    assert crypto.decrypt(blob, context="accounts_account.refresh_token") == "rt_secret-value"
    with pytest.raises(crypto.DecryptionError, match="copied from another column"):
        crypto.decrypt(blob, context="accounts_account.session_token")


def test_a_value_sealed_as_the_format_is_documented_opens_in_its_column_only():
    blob = seal_v2("rt_secret-value", "accounts_account.refresh_token")
    assert crypto.decrypt(blob, context="accounts_account.refresh_token") == "rt_secret-value"
    with pytest.raises(crypto.DecryptionError, match="copied from another column"):
        crypto.decrypt(blob, context="accounts_account.session_token")


@pytest.mark.django_db
def test_a_ciphertext_copied_into_another_column_or_table_does_not_open():
    from alerts.models import NotificationTarget

    account = AccountFactory()
    target = NotificationTarget.objects.create(url="tgram://1/2", masked_url="tgram://…")
    access = raw("accounts_account", "access_token", account.pk)
    write_raw("accounts_account", "session_token", account.pk, access)
    write_raw("webhooks_notificationtarget", "url", target.pk, access)

    copied = Account.objects.get(pk=account.pk)
    assert copied.access_token == account.access_token  # where it was sealed, it still opens
    assert isinstance(copied.session_token, crypto.Undecryptable)
    assert copied.session_token.cause == crypto.CAUSE_TAMPERED
    assert isinstance(NotificationTarget.objects.get(pk=target.pk).url, crypto.Undecryptable)


@pytest.mark.django_db
def test_a_value_in_the_old_format_still_opens_and_rotation_binds_it(capsys):
    account = AccountFactory()
    write_raw("accounts_account", "access_token", account.pk, seal_v1(account.access_token))
    assert Account.objects.get(pk=account.pk).access_token == account.access_token

    call_command("rotate_pool_key")
    assert "Re-encrypted 1 of 1 accounts" in capsys.readouterr().out
    assert raw("accounts_account", "access_token", account.pk)[:1] == crypto.FORMAT_V2
    assert Account.objects.get(pk=account.pk).access_token == account.access_token


@pytest.mark.django_db(transaction=True)
def test_the_migration_binds_existing_ciphertexts_to_their_columns():
    from alerts.models import NotificationTarget

    account = AccountFactory()
    target = NotificationTarget.objects.create(url="tgram://123:bot/-1", masked_url="tgram://…")
    executor = MigrationExecutor(connection)
    executor.migrate([("accounts", "0009_held_undecryptable"), ("webhooks", "0006_followed_teams")])
    for column in ("access_token", "session_token", "refresh_token"):
        write_raw("accounts_account", column, account.pk, seal_v1(getattr(account, column)))
    write_raw("webhooks_notificationtarget", "url", target.pk, seal_v1(target.url))

    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    for column in ("access_token", "session_token", "refresh_token"):
        assert raw("accounts_account", column, account.pk)[:1] == crypto.FORMAT_V2
    assert raw("webhooks_notificationtarget", "url", target.pk)[:1] == crypto.FORMAT_V2
    upgraded = Account.objects.get(pk=account.pk)
    assert (upgraded.access_token, upgraded.session_token, upgraded.refresh_token) == (
        account.access_token,
        account.session_token,
        account.refresh_token,
    )
    assert NotificationTarget.objects.get(pk=target.pk).url == "tgram://123:bot/-1"


@pytest.mark.django_db(transaction=True)
def test_an_edit_made_while_a_rotation_reseals_the_row_is_not_lost(settings, monkeypatch):
    """The rotation re-seals under a row lock: an edit made after it read a row's value waits for
    it, instead of being overwritten by the value the rotation had read."""
    from accounts.services import rotation
    from alerts.models import NotificationTarget

    target = NotificationTarget.objects.create(
        url="json://old.example/hook", masked_url="json://…hook"
    )
    settings.POOL_ENCRYPTION_KEY = f"{OTHER_KEY},{settings.POOL_ENCRYPTION_KEY}"
    rotation_read = threading.Event()
    rotating = []

    def pausing(read_headers):
        # The rotation has read the row and its stored headers, and is about to write it back.
        def read(model, *args):
            found = read_headers(model, *args)
            if model is NotificationTarget and threading.current_thread() is rotating[0]:
                rotation_read.set()
                time.sleep(0.5)  # the edit is made now
            return found

        return read

    # What the rotation reads the stored headers with.
    monkeypatch.setattr(rotation, "_raw_blobs", pausing(rotation._raw_blobs))

    def rotate():
        try:
            call_command("rotate_pool_key")
        finally:
            connection.close()

    rotating.append(threading.Thread(target=rotate))
    rotating[0].start()
    assert rotation_read.wait(10)
    NotificationTarget.objects.filter(pk=target.pk).update(url="json://new.example/hook")
    rotating[0].join(30)
    assert NotificationTarget.objects.get(pk=target.pk).url == "json://new.example/hook"
