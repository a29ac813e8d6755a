"""Nothing answers a stranger: every URL pattern of the URLconf, found automatically, is requested
as an anonymous visitor and as a logged-in user who is not staff, and none of them answers with
content, except the public pages listed in PUBLIC (each with its reason).

A new URL is walked without anyone remembering to add it here; if it must be public, it has to be
added to PUBLIC, with its reason, on purpose.

Also here: the API's schema and docs pages (poolsite/api_urls.py) are valid and self-contained.
"""

import re
import uuid
from itertools import product
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command
from django.urls import Resolver404, URLResolver, get_resolver, resolve, reverse
from django.utils.regex_helper import normalize

from tests.support.users import staff_with

pytestmark = pytest.mark.django_db

# URL name → why anyone may see it.
PUBLIC = {
    "admin:login": "the login form itself: staff must reach it before they are staff to the site",
    "set_language": "the language switch: it only sets the visitor's language cookie and redirects",
}
# Not in the URLconf at all: WhiteNoise serves STATIC_URL before any view. CSS, JavaScript and
# images of the admin and the API docs, the same for everyone, and nothing else is collected there.
STATIC_PREFIX = "/" + settings.STATIC_URL.lstrip("/")

METHODS = ("get", "post", "put", "delete")
# Values tried for a URL's parameters, until the URL resolves to the pattern it came from.
SAMPLE_VALUES = ("1", str(uuid.UUID(int=1)), "x", "auth", "accounts", "webhooks")


def _walk(patterns, chain=()):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, (*chain, entry))
        else:
            yield (*chain, entry)


def _name(chain) -> str | None:
    pattern = chain[-1]
    if pattern.name is None:
        return None
    namespaces = [r.namespace for r in chain[:-1] if isinstance(r, URLResolver) and r.namespace]
    return ":".join([*namespaces, pattern.name])


def _templates(chain) -> list[tuple[str, list[str]]]:
    """The URL as format strings with %(param)s places, one per way its regex can be spelt."""
    options = [("", [])]
    for entry in chain:
        pattern = entry.pattern
        if hasattr(pattern, "_route"):
            # path(): <converter:name> becomes a place for the parameter.
            spelt = re.sub(r"<(?:\w+:)?(\w+)>", r"%(\1)s", pattern._route)
            parts = [(spelt, list(pattern.converters))]
        else:
            parts = normalize(pattern._regex)
        options = [
            (head + part, params + list(names)) for head, params in options for part, names in parts
        ]
    return [("/" + fmt, params) for fmt, params in options]


def concrete_url(chain) -> str:
    """A path that resolves to this very pattern, its parameters filled with sample values."""
    for fmt, params in _templates(chain):
        for values in product(SAMPLE_VALUES, repeat=len(params)):
            path = fmt % dict(zip(params, values))
            try:
                match = resolve(path)
            except Resolver404:
                continue
            if match.func is chain[-1].callback:
                return path
    raise AssertionError(f"no sample path resolves to {chain[-1]!r}; add a value to SAMPLE_VALUES")


def every_url() -> list[tuple[str | None, str]]:
    return [(_name(chain), concrete_url(chain)) for chain in _walk(get_resolver().url_patterns)]


@pytest.fixture
def outsider(client):
    """Logged in, active, but not staff: a customer account or a staff member who was demoted."""
    client.force_login(staff_with(username="outsider", staff=False))
    return client


def check(name, path, method, response):
    where = f"{method.upper()} {path} ({name})"
    assert response.status_code < 500, where
    if name in PUBLIC:
        return
    location = response.get("Location", "")
    login = reverse("admin:login")
    if path.startswith("/admin/"):
        # Logging out someone who is not staff sends them to the admin index, which sends them here.
        target = reverse("admin:index") if name == "admin:logout" else login
        assert response.status_code == 302 and urlsplit(location).path == target, where
    elif path.startswith("/api/"):
        assert response.status_code in (401, 403), where
    elif name == "low_stock":
        assert response.status_code == (401 if method == "post" else 405), where
    else:
        # A URL nobody described yet: at least it shows nothing and sends nobody anywhere but the login.
        assert not (200 <= response.status_code < 300 and response.content), where
        assert not 300 <= response.status_code < 400 or urlsplit(location).path == login, where


def test_the_walk_finds_every_kind_of_url():
    urls = dict(every_url())
    found = set(urls)
    assert {
        "admin:index",
        "admin:login",
        "admin:app_list",
        "low_stock",
        "api-account-bulk",
        "api-run-push",
    } <= found
    assert {
        "api-account-detail",
        "api-schema",
        "api-docs",
        "admin:accounts_account_change",
    } <= found
    assert urls["admin:app_list"] in {f"/admin/{label}/" for label in SAMPLE_VALUES}
    assert None in found  # unnamed patterns (the admin's catch-all) are walked too
    assert set(PUBLIC) <= found, "a PUBLIC entry names a URL that no longer exists"


@pytest.mark.parametrize("who", ["anonymous", "outsider"])
def test_no_url_answers_a_stranger(request, client, who):
    if who == "outsider":
        client = request.getfixturevalue("outsider")
    for name, path in every_url():
        for method in METHODS:
            check(name, path, method, getattr(client, method)(path))


def test_the_public_exceptions_are_what_they_claim(client):
    login = client.get(reverse("admin:login"))
    assert login.status_code == 200 and b'name="password"' in login.content
    switched = client.post(reverse("set_language"), {"language": "zh-hans", "next": "/admin/"})
    assert switched.status_code == 302 and switched["Location"] == "/admin/"
    assert switched.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    assert client.get(STATIC_PREFIX + "admin/css/base.css").status_code == 200


# --- The API's schema and docs (poolsite/api_urls.py) ----------------------------------------


def test_the_schema_is_valid_without_warnings(tmp_path):
    # --fail-on-warn raises on any warning: an undocumented field or an unguessable type.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml")
    )
    schema = (tmp_path / "schema.yaml").read_text()
    for path in (
        "/api/accounts/bulk/",
        "/api/accounts/retire/",
        "/api/runs/push/",
        "/api/stats/",
        "/api/attempts/",
    ):
        assert f"  {path}:" in schema


def test_the_docs_load_only_assets_of_this_site(admin_client):
    page = admin_client.get(reverse("api-docs"))
    assert page.status_code == 200
    html = page.content.decode()
    assert not re.findall(r"https?://", html), "the docs page names another host"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) >= 3 and all(asset.startswith(STATIC_PREFIX) for asset in assets), assets
    for asset in assets:
        assert admin_client.get(asset).status_code == 200, asset
    schema = admin_client.get(reverse("api-schema"), HTTP_ACCEPT="application/json")
    assert schema.status_code == 200 and "/api/accounts/" in schema.json()["paths"]


def test_the_admin_login_locks_out_after_axes_failure_limit(client, django_user_model, settings):
    """README, hardening: django-axes locks a login out after AXES_FAILURE_LIMIT failures, even
    for the right password then."""
    django_user_model.objects.create_superuser("boss", password="right-password")
    url = reverse("admin:login")
    wrong = [
        client.post(url, {"username": "boss", "password": f"guess {n}"})
        for n in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert [r.status_code for r in wrong[:-1]] == [200] * (
        settings.AXES_FAILURE_LIMIT - 1
    )  # the form again

    locked = client.post(url, {"username": "boss", "password": "right-password"})

    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


# --- The lockout's client address (poolsite/client_ip.py) ---------------------------------------


def fail_logins(client, settings, **meta):
    url = reverse("admin:login")
    for n in range(settings.AXES_FAILURE_LIMIT):
        client.post(url, {"username": "boss", "password": f"guess {n}"}, **meta)


def logs_in(client, **meta):
    client.logout()
    response = client.post(
        reverse("admin:login"), {"username": "boss", "password": "right-password"}, **meta
    )
    return response.status_code == 302 and "_auth_user_id" in client.session


def test_served_directly_the_lockout_is_per_username_and_remote_addr(
    client, django_user_model, settings
):
    settings.BEHIND_TLS_PROXY = False
    django_user_model.objects.create_superuser("boss", password="right-password")
    fail_logins(client, settings, REMOTE_ADDR="198.51.100.7")

    assert not logs_in(client, REMOTE_ADDR="198.51.100.7")
    # A forged X-Forwarded-For does not get the locked-out address past the lockout...
    assert not logs_in(client, REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="192.0.2.44")
    # ...and the admin at another address still logs in.
    assert logs_in(client, REMOTE_ADDR="198.51.100.8")


def test_behind_the_proxy_the_lockout_is_per_username_and_forwarded_client(
    client, django_user_model, settings
):
    """Behind the TLS proxy REMOTE_ADDR is always the proxy's: five bad guesses from anyone must
    not lock the admin out everywhere."""
    settings.BEHIND_TLS_PROXY, settings.TRUSTED_PROXY_COUNT = True, 1
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    django_user_model.objects.create_superuser("boss", password="right-password")
    fail_logins(client, settings, **proxy, HTTP_X_FORWARDED_FOR="203.0.113.5")

    assert not logs_in(client, **proxy, HTTP_X_FORWARDED_FOR="203.0.113.5")
    # What the client wrote left of the proxy's entry is not trusted: still the same client.
    assert not logs_in(client, **proxy, HTTP_X_FORWARDED_FOR="192.0.2.44, 203.0.113.5")
    assert logs_in(client, **proxy, HTTP_X_FORWARDED_FOR="203.0.113.9")


def test_behind_two_proxies_the_client_is_the_second_entry_from_the_right(
    client, django_user_model, settings
):
    settings.BEHIND_TLS_PROXY, settings.TRUSTED_PROXY_COUNT = True, 2
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    django_user_model.objects.create_superuser("boss", password="right-password")
    fail_logins(client, settings, **proxy, HTTP_X_FORWARDED_FOR="192.0.2.1, 203.0.113.5, 10.1.1.1")

    assert not logs_in(client, **proxy, HTTP_X_FORWARDED_FOR="203.0.113.5, 10.1.1.2")
    assert logs_in(client, **proxy, HTTP_X_FORWARDED_FOR="203.0.113.9, 10.1.1.1")
