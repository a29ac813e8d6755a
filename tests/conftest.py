import os
import random

import pytest
from hypothesis import settings as hypothesis_settings

from devtools import fakes
from tests.support.manager import MANAGER_KEY
from tests.support.users import staff_with

# In CI the property tests replay the same examples every run: a failure there is a bug to fix,
# never a roll of the dice. Locally they explore new examples each run.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture
def rng():
    return random.Random(20261125)


@pytest.fixture
def write_file(tmp_path):
    """Write text to a file under tmp_path and return its path."""

    def write(text: str, name: str = "accounts.txt", encoding: str = "utf-8") -> str:
        path = tmp_path / name
        path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
        return str(path)

    return write


@pytest.fixture
def material(rng):
    """A factory of complete, valid account material (all four secrets)."""

    def make(**overrides):
        return fakes.make_account(rng=rng, **overrides)

    return make


@pytest.fixture(autouse=True)
def _english_by_default():
    """A request in another language leaves it active in the thread; each test starts in English."""
    from django.utils import translation

    translation.activate("en")
    yield
    translation.deactivate()


@pytest.fixture
def client():
    """A browser that asks for English. The console speaks 简体中文 unless asked otherwise
    (LANGUAGE_CODE); the tests compare pages with English messages, so they ask for English, as a
    browser set to English does. Tests of the Chinese pages send Accept-Language: zh-hans."""
    from django.test import Client

    return Client(headers={"Accept-Language": "en"})


@pytest.fixture
def admin_client(db, admin_user):
    """pytest-django's admin_client, asking for English as `client` does."""
    from django.test import Client

    client = Client(headers={"Accept-Language": "en"})
    client.force_login(admin_user)
    return client


@pytest.fixture
def manager(settings):
    """A fake seat manager on a real loopback HTTP server, and the settings that point at it."""
    from devtools.fake_manager import FakeManager

    with FakeManager(api_key=MANAGER_KEY) as fake:
        settings.MANAGER_BASE_URL = fake.base_url
        settings.MANAGER_API_KEY = MANAGER_KEY
        settings.MANAGER_CONNECT_TIMEOUT = 1
        settings.MANAGER_READ_TIMEOUT = 1
        yield fake


@pytest.fixture
def worker():
    """Do, here and now, what `manage.py db_worker` does with the loads waiting for it: the same
    service function its task runs (tests/accounts/test_load_worker.py runs a real worker)."""
    from accounts.models import BATCH_RUNNING_STATUSES, AccountBatch
    from accounts.services import account_batch_process

    def run():
        for pk in AccountBatch.objects.filter(status__in=BATCH_RUNNING_STATUSES).values_list(
            "pk", flat=True
        ):
            account_batch_process(batch_id=pk)

    return run


@pytest.fixture
def user_with(db):
    """A user with exactly the given permissions ("app.codename"); staff unless told otherwise."""
    return staff_with


@pytest.fixture
def client_with(client, user_with):
    """The test client, logged in as a user with exactly the given permissions."""

    def login(*perms, staff=True):
        client.force_login(user_with(*perms, staff=staff))
        return client

    return login
