import factory
from django.conf import settings
from django.utils.dateparse import parse_datetime
from factory.django import DjangoModelFactory

from accounts.models import Account, AccountBatch, AccountStatus, BatchSource, BatchStatus
from accounts.services import consumption_count
from devtools import fakes
from tests.support.lookup_hashes import account_lookup_hashes


class AccountBatchFactory(DjangoModelFactory):
    class Meta:
        model = AccountBatch

    label = factory.Sequence(lambda n: f"batch {n}")
    source = BatchSource.COMMAND
    status = BatchStatus.LOADED


class AccountFactory(DjangoModelFactory):
    """An account as the loader would store it: real-looking tokens, hashes under the current key.

    The hashes are computed by tests/support/lookup_hashes.py from their written definition, not
    by the product; tests/accounts/test_load.py checks the loader stores the same ones."""

    class Meta:
        model = Account

    batch = factory.SubFactory(AccountBatchFactory)
    email = factory.Sequence(lambda n: f"team{n}@example.com")
    account_id = ""
    access_token = factory.LazyAttribute(lambda o: fakes.make_access_token(email=o.email))
    session_token = factory.LazyFunction(fakes.make_session_token)
    refresh_token = factory.LazyFunction(fakes.make_refresh_token)
    client_id = factory.LazyFunction(fakes.make_client_id)
    at_email = factory.SelfAttribute("email")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        material = {
            f: kwargs.get(f)
            for f in ("email", "account_id", "access_token", "session_token", "refresh_token")
        }
        kwargs.update(
            account_lookup_hashes(**material, encryption_keys=settings.POOL_ENCRYPTION_KEY)
        )
        account = super()._create(model_class, *args, **kwargs)
        if account.status == AccountStatus.CONSUMED and account.consumed_at:
            # As account_settle_consumed does: every consumption is counted in its day's rollup.
            at = account.consumed_at
            consumption_count(at=parse_datetime(at) if isinstance(at, str) else at)
        return account


# A well-formed key that is not the test settings' key: rows sealed with it are the rows "a key
# this service does not have" sealed (a process on an old key list, a regenerated .env).
FOREIGN_KEY = "Zm9yZWlnbi1rZXktb2YtMzItYnl0ZXMtZm9yLXRlc3Q="


def account_sealed_with_foreign_key(settings, **kwargs):
    """An account whose tokens no configured key opens (sealed under FOREIGN_KEY)."""
    current = settings.POOL_ENCRYPTION_KEY
    settings.POOL_ENCRYPTION_KEY = FOREIGN_KEY
    try:
        return AccountFactory(**kwargs)
    finally:
        settings.POOL_ENCRYPTION_KEY = current
