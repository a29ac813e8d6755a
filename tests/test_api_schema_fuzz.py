"""Schemathesis against /api/'s own OpenAPI schema: never a 5xx, and the pool changes only as documented.

Every operation in the schema gets a bounded, derandomized run of generated requests (valid ones, and
ones that break the schema), sent in-process to the WSGI app as a superuser with a DRF token:

- no response is a server error (schemathesis' `not_a_server_error` check);
- a GET leaves every Account row as it was;
- a write changes accounts only through its documented effect: bulk only stores the upload for the
  worker (its task, too, runs on commit) and adds no account in the request, retire moves exactly the ids it answers with to "retired", push only queues a
  run (its task runs on commit, which never comes inside a test transaction) and leaves the pool alone.
"""

import json
import os

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from accounts.models import Account, AccountStatus
from apitokens.services import api_token_create
from tests.factories import AccountFactory

pytestmark = pytest.mark.django_db

# Every operation the schema lists; test_schema_lists_exactly_these_operations keeps this in step.
OPERATIONS = [
    ("GET", "/api/accounts/"),
    ("GET", "/api/accounts/{id}/"),
    ("GET", "/api/accounts/batches/{batch_id}/"),
    ("POST", "/api/accounts/bulk/"),
    ("POST", "/api/accounts/retire/"),
    ("GET", "/api/attempts/"),
    ("GET", "/api/attempts/{id}/"),
    ("GET", "/api/events/"),
    ("GET", "/api/events/{id}/"),
    ("GET", "/api/runs/"),
    ("GET", "/api/runs/{id}/"),
    ("POST", "/api/runs/push/"),
    ("GET", "/api/stats/"),
]

EXAMPLES_PER_OPERATION = int(os.environ.get("PROOF_API_EXAMPLES") or 25)  # `make proof` runs more
FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)
SNAPSHOT_FIELDS = (
    "id",
    "status",
    "usable",
    "batch_id",
    "attempts",
    "lease_expires_at",
    "updated_at",
)


def pool() -> dict:
    return {row[0]: row for row in Account.objects.order_by("id").values_list(*SNAPSHOT_FIELDS)}


@pytest.fixture
def app():
    """The WSGI app, called in this thread on the test's own connection (kept open, as the test client does)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def check_pool_effect(operation, response, before: dict, after: dict) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    if operation.method.upper() == "GET" or operation.path.endswith("/runs/push/"):
        assert after == before, f"{label} changed the pool"
        return
    if operation.path.endswith("/accounts/bulk/"):
        assert after == before, f"{label} changed the pool in the request; only the worker loads"
        return
    if operation.path.endswith("/accounts/retire/"):
        retired = set(response.json()["retired"]) if response.status_code == 200 else set()
        for pk, row in before.items():
            if pk in retired:
                assert after[pk][1] == AccountStatus.RETIRED, (
                    f"{label} answered {pk} retired but it is {after[pk][1]}"
                )
            else:
                assert after[pk] == row, (
                    f"{label} changed account {pk}, which it did not answer as retired"
                )
        assert after.keys() == before.keys(), f"{label} added or removed accounts"
        return
    raise AssertionError(
        f"{label}: a write this test does not know; say what it may do to the pool"
    )


@pytest.fixture
def headers(django_user_model):
    """A superuser's DRF token header, and a small pool of accounts in several states."""
    admin = django_user_model.objects.create_superuser("fuzz-admin", "fuzz@example.com", "pw")
    AccountFactory.create_batch(3)
    AccountFactory(status=AccountStatus.REJECTED)
    AccountFactory(status=AccountStatus.CONSUMED, consumed_at=timezone.now())
    return {"Authorization": f"Token {api_token_create(user=admin)[1]}"}


@pytest.fixture
def schema(app, headers):
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", app, headers=headers)


def operation_of(schema, method: str, path: str):
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) == (method, path):
            return operation
    raise LookupError(f"{method} {path} is not in the schema")


def test_schema_lists_exactly_these_operations(schema):
    listed = sorted(
        (result.ok().method.upper(), result.ok().path) for result in schema.get_all_operations()
    )
    assert listed == sorted(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_generated_requests_get_no_server_error_and_change_the_pool_only_as_documented(
    schema, headers, method, path
):
    operation = operation_of(schema, method, path)
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @FUZZ
    @given(case=strategy)
    def run(case):
        before = pool()
        response = case.call(headers=headers)
        case.validate_response(response, checks=[not_a_server_error], headers=headers)
        check_pool_effect(operation, response, before, pool())

    run()


# Found by the fuzz above on SQLite (OverflowError, a 500): ids are now bounded to 64 bits.
@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/api/accounts/retire/", {"ids": [2**63]}),
        ("POST", "/api/accounts/retire/", {"ids": [str(2**63)]}),
        ("GET", f"/api/accounts/?batch={2**63}", None),
    ],
    ids=["retire-int", "retire-numeric-string", "list-batch-filter"],
)
def test_an_integer_past_64_bits_is_no_server_error(client, headers, method, url, body):
    extra = {"HTTP_AUTHORIZATION": headers["Authorization"]}
    before = pool()
    if method == "POST":
        response = client.post(url, json.dumps(body), content_type="application/json", **extra)
    else:
        response = client.get(url, **extra)
    assert response.status_code < 500
    assert pool() == before
