"""Tokens are shown by the hint stored when they are sealed: no list page decrypts anything."""

import importlib

import pytest
from django.apps import apps
from django.urls import reverse

from accounts import crypto, services
from accounts.models import Account, AccountStatus, BatchStatus
from accounts.tokens import mask
from devtools import fakes
from tests.factories import AccountBatchFactory, AccountFactory

pytestmark = pytest.mark.django_db

TOKENS = ("access_token", "session_token", "refresh_token")


def hints(account):
    return tuple(getattr(account, f"{name}_hint") for name in TOKENS)


def masks(account):
    return tuple(mask(getattr(account, name)) for name in TOKENS)


def test_the_loader_stores_each_tokens_hint_equal_to_its_mask(material):
    lines = [fakes.render_line(material(), "positional") for _ in range(3)]
    services.account_load(lines=lines, batch=AccountBatchFactory(status=BatchStatus.LOADING))
    accounts = list(Account.objects.all())
    assert len(accounts) == 3
    for account in accounts:
        assert hints(account) == masks(account) and all(
            h.startswith("…") and len(h) == 5 for h in hints(account)
        )


def test_the_pool_list_and_the_api_list_decrypt_nothing(admin_client, monkeypatch):
    accounts = AccountFactory.create_batch(3)
    calls = []
    real = crypto.decrypt
    monkeypatch.setattr(crypto, "decrypt", lambda *a, **kw: calls.append(1) or real(*a, **kw))

    page = admin_client.get(reverse("admin:accounts_account_changelist"))
    listed = admin_client.get("/api/accounts/")

    assert page.status_code == 200 and listed.status_code == 200
    assert calls == []
    for account in accounts:
        assert mask(account.access_token) in page.content.decode()
    shown = {row["id"]: row for row in listed.json()["results"]}
    for account in accounts:
        row = shown[account.pk]
        assert (
            row["access_token_masked"],
            row["session_token_masked"],
            row["refresh_token_masked"],
        ) == masks(account)


def test_requeue_stores_the_new_tokens_hints(admin_user):
    account = AccountFactory(status=AccountStatus.REJECTED)
    new_at = fakes.make_access_token(email=account.email)
    services.account_requeue(account_id=account.pk, changes={"access_token": new_at}, by=admin_user)
    account.refresh_from_db()
    assert account.access_token == new_at and hints(account) == masks(account)
    assert account.access_token_hint == mask(new_at)


def test_the_migration_fills_the_hints_of_existing_accounts():
    accounts = AccountFactory.create_batch(3)
    Account.objects.update(access_token_hint="", session_token_hint="", refresh_token_hint="")
    importlib.import_module("accounts.migrations.0012_token_hints").fill_hints(apps, None)
    for account in accounts:
        account.refresh_from_db()
        assert hints(account) == masks(account) and account.access_token_hint


def test_the_pool_list_reads_the_token_columns_of_its_page_only(admin_client, settings):
    """Counting the list (up to its cap) must not read a token column of every row counted."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    AccountFactory.create_batch(3)
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(reverse("admin:accounts_account_changelist"))
    assert page.status_code == 200
    reading = [q["sql"] for q in queries.captured_queries if '"access_token"' in q["sql"]]
    assert len(reading) == 1 and " IN (" in reading[0] and "COUNT(" not in reading[0]
