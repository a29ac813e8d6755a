"""With DEBUG=1 the technical 500 page shows no decrypted token and no secret setting."""

import uuid

import pytest
from django.urls import path

from accounts import crypto
from accounts.models import Account
from tests.factories import AccountFactory
from webhooks.client import ManagerClient

pytestmark = pytest.mark.django_db

# Not token-shaped, so only the sensitive_variables marks can hide it; made at run time.
NOT_TOKEN_SHAPED = {}


def decrypting_view(request):
    account = Account.objects.get(pk=int(request.GET["pk"]))
    session_token = account.session_token  # a decrypted token in a local of the failing frame
    ManagerClient.from_settings().import_single(account)  # raises inside the client (see test)
    return session_token


def encrypting_view(request):
    crypto.encrypt(
        NOT_TOKEN_SHAPED["value"], context="accounts_account.access_token"
    )  # raises inside encrypt: the key is malformed


urlpatterns = [path("decrypting/", decrypting_view), path("encrypting/", encrypting_view)]


@pytest.fixture
def debug_client(client, settings):
    settings.DEBUG = True
    client.raise_request_exception = False
    return client


def _slices(secret: str) -> set[str]:
    return {secret[i : i + 12] for i in range(0, max(1, len(secret) - 11), 6)}


def assert_absent(page: str, **secrets):
    for name, secret in secrets.items():
        leaked = [piece for piece in _slices(secret) if piece in page]
        assert not leaked, f"{name} on the error page: {leaked[:2]}"


@pytest.mark.urls("tests.test_error_pages")
def test_the_debug_error_page_shows_no_token_and_no_secret_setting(
    debug_client, settings, monkeypatch
):
    account = AccountFactory()
    settings.MANAGER_BASE_URL = "http://127.0.0.1:9"
    # Made at run time: the page shows the source lines around each frame, this test's included.
    made = uuid.uuid4().hex
    settings.MANAGER_API_KEY = f"mk_{made[:16]}"
    settings.NOTIFY_URLS = [f"tgram://123456789:{made[16:]}/-100123"]

    def refuse(self, body, **kwargs):
        raise RuntimeError("the manager is down")

    monkeypatch.setattr(ManagerClient, "_post", refuse)
    database_url = f"postgres://pool:{made[::-1]}@db.example/pool"
    response = debug_client.get("/decrypting/", {"pk": account.pk}, DATABASE_URL=database_url)
    page = response.content.decode()

    assert response.status_code == 500 and "RuntimeError" in page and "Traceback" in page
    assert "session_token" in page  # the frame and its variables are shown, their values are not
    assert_absent(
        page,
        access_token=account.access_token,
        session_token=account.session_token,
        refresh_token=account.refresh_token,
        manager_key=settings.MANAGER_API_KEY,
        pool_key=settings.POOL_ENCRYPTION_KEY,
        notify_url_token=made[16:],
        database_password=made[::-1],
        secret_key=settings.SECRET_KEY,
    )


@pytest.mark.urls("tests.test_error_pages")
def test_locals_of_the_encryption_path_are_hidden(debug_client, settings):
    NOT_TOKEN_SHAPED["value"] = f"plain {uuid.uuid4()}"
    settings.POOL_ENCRYPTION_KEY = "not a key"
    response = debug_client.get("/encrypting/")
    page = response.content.decode()
    assert response.status_code == 500 and "ImproperlyConfigured" in page
    assert "plaintext" in page  # the variable is listed, its value is not
    assert NOT_TOKEN_SHAPED["value"] not in page
