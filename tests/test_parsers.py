"""poolsite/parsers.py: JSON that Python parses but the service cannot hold is a 400 on every API
endpoint that takes JSON, never a 500."""

import json

import pytest
from django.urls import reverse

from accounts.models import Account, AccountBatch
from poolsite.parsers import MAX_JSON_DEPTH, json_problem
from webhooks.models import ReplenishmentRun

pytestmark = pytest.mark.django_db

JSON_ENDPOINTS = [
    reverse("api-account-bulk"),
    reverse("api-account-retire"),
    reverse("api-run-push"),
]


def post_raw(client, url, raw):
    return client.post(url, raw, content_type="application/json")


@pytest.mark.parametrize("url", JSON_ENDPOINTS)
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 5, 5_000, 100_000])
def test_deep_nesting_is_a_400_on_every_json_endpoint(admin_client, url, depth):
    # Deep enough for DRF's parser to hit Python's recursion limit (a 500 before), or merely
    # deeper than any endpoint takes.
    response = post_raw(admin_client, url, '{"x": ' + "[" * depth + "]" * depth + "}")
    assert response.status_code == 400, response.content
    assert "nested" in response.json()["detail"]


@pytest.mark.parametrize(
    "url, body, field",
    [
        (reverse("api-account-bulk"), {"text": "a@example.com", "label": "批次\ud800"}, "label"),
        (reverse("api-account-bulk"), {"text": "a@example.com,\udfff"}, "text"),
        (reverse("api-account-retire"), {"ids": [1], "why": ["\ud800"]}, "why.0"),
        (reverse("api-run-push"), {"accounts": "\ud800"}, "accounts"),
        (reverse("api-run-push"), {"\ud800": 1}, "\\ud800"),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_the_field(admin_client, url, body, field):
    response = post_raw(
        admin_client, url, json.dumps(body)
    )  # ensure_ascii: the escape as a client sends it
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert "surrogate" in response.json()[field][0]
    assert not AccountBatch.objects.exists() and not Account.objects.exists()
    assert not ReplenishmentRun.objects.exists()


def test_json_problem_names_the_first_field_it_cannot_hold():
    assert json_problem({"a": ["ok", {"b": "\ud800"}]}) == ("surrogate", "a.1.b")
    assert json_problem({"a": "fine", "b": [1, 2.5, None, True]}) is None
    deep = []
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = [deep]
    assert json_problem({"x": deep})[0] == "depth"
