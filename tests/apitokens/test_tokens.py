"""API tokens (apitokens/, django-rest-knox): hashed, shown once, each user's own, optional expiry."""

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from knox.models import AuthToken

from apitokens.services import api_token_create
from tests.support.users import staff_with

pytestmark = pytest.mark.django_db

STATS_URL = reverse("api-stats")
LIST_URL = reverse("admin:apitokens_apitoken_changelist")
ADD_URL = reverse("admin:apitokens_apitoken_add")


def api_get(client, key):
    return client.get(STATS_URL, HTTP_AUTHORIZATION=f"Token {key}")


def staff_with_token_permissions(name="clerk"):
    return staff_with(
        "apitokens.add_apitoken",
        "apitokens.view_apitoken",
        "apitokens.delete_apitoken",
        username=name,
    )


def shown_key(response) -> str:
    return re.search(r'id="api-token-key"[^>]*>([^<]+)<', response.content.decode()).group(1)


def test_a_key_is_stored_only_as_a_hash_and_authenticates_with_the_token_header(client, admin_user):
    token, key = api_token_create(user=admin_user)
    assert api_get(client, key).status_code == 200
    assert api_get(client, key[:-1] + ("0" if key[-1] != "0" else "1")).status_code == 401
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {AuthToken._meta.db_table}")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    assert key not in stored and key[15:31] not in stored


def test_an_expired_token_no_longer_works(client, admin_user):
    token, key = api_token_create(user=admin_user, expires_in=timedelta(days=1))
    assert api_get(client, key).status_code == 200
    AuthToken.objects.filter(pk=token.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    assert api_get(client, key).status_code == 401


def test_a_header_that_is_not_utf8_is_a_401_not_a_500(client):
    assert client.get(STATS_URL, HTTP_AUTHORIZATION="Token caf\xe9").status_code == 401


def test_the_admin_shows_a_new_key_once_and_never_again(client, admin_user):
    client.force_login(admin_user)
    created = client.post(ADD_URL, {"user": admin_user.pk, "expiry_0": "", "expiry_1": ""})
    assert created.status_code == 200 and "no-store" in created["Cache-Control"]
    key = shown_key(created)
    assert api_get(client.__class__(), key).status_code == 200

    token = AuthToken.objects.get()
    pages = [
        client.get(LIST_URL),
        client.get(reverse("admin:apitokens_apitoken_change", args=[token.pk])),
        client.get(reverse("admin:apitokens_apitoken_delete", args=[token.pk])),
        client.get(reverse("admin:apitokens_apitoken_history", args=[token.pk])),
    ]
    # The key is never shown again, not even its lookup prefix. (The row's id is knox's digest, a
    # SHA-512 of the key: it appears in the admin's URLs, and cannot be sent in its place.)
    for page in pages:
        assert page.status_code == 200 and key[:15] not in page.content.decode()
    assert api_get(client.__class__(), token.digest).status_code == 401
    assert all(key[:15] not in e.object_repr + e.change_message for e in LogEntry.objects.all())


def test_staff_cannot_make_or_read_a_token_for_the_superuser(client, admin_user):
    """A staff member with add and view permission on tokens made one for the superuser, read it
    in DRF's token list, and used it."""
    clerk = staff_with_token_permissions()
    _, boss_key = api_token_create(user=admin_user)
    client.force_login(clerk)

    refused = client.post(ADD_URL, {"user": admin_user.pk, "expiry_0": "", "expiry_1": ""})
    assert refused.status_code == 200 and "api-token-key" not in refused.content.decode()
    assert not AuthToken.objects.filter(user=clerk).exists() and AuthToken.objects.count() == 1

    boss_token = AuthToken.objects.get(user=admin_user)
    listing = client.get(LIST_URL).content.decode()
    assert f"#{boss_token.digest[:8]}" not in listing and boss_key[:15] not in listing
    for name in ("change", "delete"):
        page = client.get(reverse(f"admin:apitokens_apitoken_{name}", args=[boss_token.pk]))
        assert page.status_code == 302  # "does not exist", back to the admin index
    client.post(reverse("admin:apitokens_apitoken_delete", args=[boss_token.pk]), {"post": "yes"})
    assert AuthToken.objects.filter(user=admin_user).exists()

    # Their own token they can make, see and use (with their own permissions).
    mine = client.post(ADD_URL, {"user": clerk.pk, "expiry_0": "", "expiry_1": ""})
    assert mine.status_code == 200
    assert AuthToken.objects.get(user=clerk)
    assert api_get(client.__class__(), shown_key(mine)).status_code == 403  # no view_account


def test_the_superuser_manages_everyones_tokens(client, admin_user):
    clerk = staff_with_token_permissions()
    api_token_create(user=clerk)
    client.force_login(admin_user)
    assert str(clerk) in client.get(LIST_URL).content.decode()
    assert (
        client.post(ADD_URL, {"user": clerk.pk, "expiry_0": "", "expiry_1": ""}).status_code == 200
    )
    assert AuthToken.objects.filter(user=clerk).count() == 2


def test_the_command_prints_a_new_key_once(client, admin_user):
    out, err = StringIO(), StringIO()
    call_command(
        "create_api_token", admin_user.username, "--expires-days", "30", stdout=out, stderr=err
    )
    key = out.getvalue().strip()
    assert api_get(client, key).status_code == 200
    token = AuthToken.objects.get()
    assert timedelta(days=29) < token.expiry - timezone.now() <= timedelta(days=30)
    assert key not in err.getvalue()
    with pytest.raises(CommandError):
        call_command("create_api_token", "nobody", stdout=StringIO(), stderr=StringIO())


def test_drf_tokens_are_carried_over_hashed_and_their_clear_table_dropped(client, admin_user):
    """Keys made with DRF's authtoken before the move keep working; none stays readable."""
    import importlib
    import types

    from django.apps import apps

    migration = importlib.import_module("apitokens.migrations.0002_from_drf_authtoken")
    old_key = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    with connection.cursor() as cursor:
        cursor.execute(
            'CREATE TABLE authtoken_token ("key" varchar(40) PRIMARY KEY, created timestamp, user_id integer)'
        )
        cursor.execute(
            "INSERT INTO authtoken_token VALUES (%s, %s, %s)",
            [old_key, timezone.now(), admin_user.pk],
        )

    def execute(sql):
        with connection.cursor() as cursor:
            cursor.execute(sql)

    migration.carry_over(apps, types.SimpleNamespace(connection=connection, execute=execute))

    assert "authtoken_token" not in connection.introspection.table_names()
    assert AuthToken.objects.get().user == admin_user
    assert api_get(client, old_key).status_code == 200
