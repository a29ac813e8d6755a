"""/api/accounts/: list, detail, bulk load and retire, through the test client with real auth."""

import json
import uuid
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from django.utils import timezone

from accounts import api
from accounts.models import (
    Account,
    AccountBatch,
    AccountStatus,
    BatchSource,
    BatchStatus,
    UnusableReason,
)
from apitokens.services import api_token_create
from devtools import fakes
from tests.factories import AccountBatchFactory, AccountFactory
from tests.support.api import post_json
from tests.support.secrets import assert_no_secret, secrets_of

pytestmark = pytest.mark.django_db

LIST_URL = reverse("api-account-list")
BULK_URL = reverse("api-account-bulk")
RETIRE_URL = reverse("api-account-retire")


def detail_url(pk):
    return reverse("api-account-detail", args=[pk])


# --- Reading --------------------------------------------------------------------------------


def test_list_shows_tokens_masked_and_never_in_full(admin_client):
    older, newer = (
        AccountFactory(),
        AccountFactory(account_id=str(uuid.uuid4()), refresh_token="rt_listed-refresh-token-Q7x9"),
    )
    response = admin_client.get(LIST_URL)
    assert response.status_code == 200
    body = response.json()
    assert [row["id"] for row in body["results"]] == [newer.pk, older.pk]
    row = body["results"][0]
    assert row["access_token_masked"] == "…" + newer.access_token[-4:]
    assert row["session_token_masked"] == "…" + newer.session_token[-4:]
    assert row["refresh_token_masked"] == "…Q7x9"
    assert (row["email"], row["status"], row["batch"], row["account_id"]) == (
        newer.email,
        "available",
        newer.batch_id,
        newer.account_id,
    )
    assert not {"access_token", "session_token", "refresh_token"} & set(row)
    assert_no_secret(response.content.decode(), *secrets_of(older, newer))
    detail = admin_client.get(detail_url(newer.pk))
    assert detail.status_code == 200 and detail.json() == row
    assert_no_secret(detail.content.decode(), *secrets_of(newer))


def test_detail_of_a_missing_account_is_404(admin_client):
    assert admin_client.get(detail_url(999999)).status_code == 404


def test_filters(admin_client):
    batch = AccountBatchFactory()
    alice = AccountFactory(email="alice@example.com", batch=batch)
    bob = AccountFactory(email="bob@example.com", status=AccountStatus.REJECTED, batch=batch)
    flagged = AccountFactory(
        email="alina@example.org", usable=False, unusable_reason=UnusableReason.AT_EXPIRED
    )

    def ids(**params):
        response = admin_client.get(LIST_URL, params)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids() == {alice.pk, bob.pk, flagged.pk}
    assert ids(status="rejected") == {bob.pk}
    assert ids(usable="false") == {flagged.pk}
    assert ids(usable="true") == {alice.pk, bob.pk}
    assert ids(batch=batch.pk) == {alice.pk, bob.pk}
    assert ids(email=" ALI ") == {alice.pk, flagged.pk}
    assert ids(email="ali", usable="true") == {alice.pk}
    assert ids(email="") == {alice.pk, bob.pk, flagged.pk}


@pytest.mark.parametrize(
    "params", [{"status": "gone"}, {"usable": "maybe"}, {"batch": "x"}, {"batch": "0"}]
)
def test_a_bad_filter_is_a_400_naming_it(admin_client, params):
    response = admin_client.get(LIST_URL, params)
    assert response.status_code == 400 and set(response.json()) == set(params)


def test_cursor_pages_in_either_id_order_without_a_count(admin_client):
    accounts = AccountFactory.create_batch(5)
    for ordering, expected in (("-id", accounts[::-1]), ("id", accounts)):
        seen, url, params = [], LIST_URL, {"page_size": 2, "ordering": ordering}
        while url:
            body = admin_client.get(url, params).json()
            assert "count" not in body and len(body["results"]) <= 2
            seen += [row["id"] for row in body["results"]]
            url, params = body["next"], None
        assert seen == [a.pk for a in expected]


# --- Who may ---------------------------------------------------------------------------------


def test_reading_needs_staff_with_the_view_permission(client, client_with):
    account = AccountFactory()
    for url in (LIST_URL, detail_url(account.pk)):
        assert client.get(url).status_code in (401, 403)
    non_staff = client_with("accounts.view_account", staff=False)
    assert non_staff.get(LIST_URL).status_code == 403
    assert client_with().get(LIST_URL).status_code == 403
    assert client_with("accounts.view_account").get(LIST_URL).status_code == 200
    assert client_with("accounts.change_account").get(detail_url(account.pk)).status_code == 200


def test_token_authentication(client, user_with):
    _, key = api_token_create(user=user_with("accounts.view_account"))
    AccountFactory()
    ok = client.get(LIST_URL, HTTP_AUTHORIZATION=f"Token {key}")
    assert ok.status_code == 200 and len(ok.json()["results"]) == 1
    wrong = client.get(LIST_URL, HTTP_AUTHORIZATION="Token " + "0" * 40)
    # 403, not 401: session authentication comes first and names no WWW-Authenticate scheme.
    assert wrong.status_code in (401, 403) and "results" not in wrong.json()


def test_writes_need_their_model_permission(client, client_with, material):
    account = AccountFactory()
    line = fakes.render_line(material(), "delimited-dash")
    assert post_json(client, BULK_URL, {"text": line}).status_code in (401, 403)
    assert post_json(client, RETIRE_URL, {"ids": [account.pk]}).status_code in (401, 403)
    assert (
        post_json(
            client_with("accounts.add_accountbatch", staff=False), BULK_URL, {"text": line}
        ).status_code
        == 403
    )
    viewer = client_with("accounts.view_account", "accounts.change_accountbatch")
    assert post_json(viewer, BULK_URL, {"text": line}).status_code == 403
    assert post_json(viewer, RETIRE_URL, {"ids": [account.pk]}).status_code == 403
    assert Account.objects.count() == 1 and Account.objects.get().status == AccountStatus.AVAILABLE
    assert (
        post_json(client_with("accounts.add_accountbatch"), BULK_URL, {"text": line}).status_code
        == 202
    )
    assert (
        post_json(
            client_with("accounts.change_account"), RETIRE_URL, {"ids": [account.pk]}
        ).status_code
        == 200
    )


def test_token_authentication_can_write(client, user_with, material, worker):
    _, key = api_token_create(user=user_with("accounts.add_accountbatch"))
    line = fakes.render_line(material(), "positional")
    response = post_json(client, BULK_URL, {"text": line}, HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 202
    worker()
    assert Account.objects.count() == 1


# --- Bulk load ---------------------------------------------------------------------------------


def status_of(client, response):
    """The batch's status, from the URL the 202 answer gave."""
    assert response.status_code == 202, response.content
    answer = client.get(response.json()["status_url"])
    assert answer.status_code == 200
    return answer.json()


def test_bulk_answers_202_with_a_status_url_and_the_worker_loads(
    admin_client, admin_user, material, worker
):
    good, other, flagged = material(), material(), material(session_token=None, refresh_token=None)
    existing = AccountFactory()
    flagged_line = fakes.render_line(
        {
            **flagged,
            "access_token": fakes.make_access_token(
                email=flagged["email"], lifetime=timedelta(hours=2)
            ),
        },
        "delimited-pipe",
    )
    text = "\r\n".join(
        [
            fakes.render_line(good, "positional"),  # 1 created
            "not an account",  # 2 invalid
            f"{existing.email}----{existing.access_token}",  # 3 duplicate of the pool
            fakes.render_line(good, "delimited-dash"),  # 4 duplicate of line 1
            fakes.render_line(other, "delimited-tab"),  # 5 created
            flagged_line,  # 6 created, flagged unusable
        ]
    )
    response = post_json(admin_client, BULK_URL, {"text": text, "label": "november"})
    batch = AccountBatch.objects.get(label="november")
    assert response.json() == {
        "batch": batch.pk,
        "status": "loading",
        "status_url": f"http://testserver/api/accounts/batches/{batch.pk}/",
    }
    assert response["Location"] == response.json()["status_url"]
    assert not Account.objects.filter(batch=batch).exists()  # nothing done in the request
    waiting = status_of(admin_client, response)
    assert (waiting["status"], waiting["done"], waiting["total_lines"], waiting["lines_read"]) == (
        "loading",
        False,
        6,
        0,
    )

    worker()
    body = status_of(admin_client, response)
    batch.refresh_from_db()
    assert (batch.source, batch.status, batch.loaded_by, batch.content) == (
        BatchSource.API,
        BatchStatus.LOADED,
        admin_user,
        None,
    )
    assert {
        k: body[k]
        for k in ("status", "done", "batch", "created", "duplicates", "invalid", "flagged_unusable")
    } == {
        "status": "loaded",
        "done": True,
        "batch": batch.pk,
        "created": 3,
        "duplicates": 2,
        "invalid": 1,
        "flagged_unusable": 1,
    }
    lines = {line["line"]: line for line in body["lines"]}
    assert {n: line["outcome"] for n, line in lines.items()} == {
        2: "invalid",
        3: "duplicate",
        4: "duplicate",
        6: "created",
    }
    assert f"account #{existing.pk}" in lines[3]["messages"][0]
    assert "line 1" in lines[4]["messages"][0]
    assert all(line["messages"] for line in body["lines"])
    assert set(Account.objects.filter(batch=batch).values_list("email", flat=True)) == {
        good["email"],
        other["email"],
        flagged["email"],
    }
    assert not Account.objects.get(email=flagged["email"]).usable
    assert_no_secret(json.dumps(body), *secrets_of(existing), *(v for v in good.values() if v))


def test_bulk_takes_a_text_plain_body_with_options_in_the_query(admin_client, material, worker):
    good = material()
    text = "\ufeff" + fakes.render_line(good, "delimited-dash") + "\n"
    url = BULK_URL + "?label=plain&strict=1"
    response = admin_client.post(url, text.encode(), content_type="text/plain; charset=utf-8")
    worker()
    assert status_of(admin_client, response)["created"] == 1
    assert Account.objects.get().batch.label == "plain"


def test_bulk_dry_run_saves_nothing(admin_client, material, worker):
    text = fakes.render_line(material(), "positional") + "\nnonsense"
    response = admin_client.post(BULK_URL + "?dry_run=true", text, content_type="text/plain")
    worker()
    body = status_of(admin_client, response)
    assert (body["status"], body["dry_run"], body["created"], body["invalid"]) == (
        "checked",
        True,
        1,
        1,
    )
    assert [(line["line"], line["outcome"]) for line in body["lines"]] == [(2, "invalid")]
    assert not Account.objects.exists() and AccountBatch.objects.get().content is None


def test_bulk_strict_saves_nothing_when_a_line_is_invalid(admin_client, material, worker):
    text = fakes.render_line(material(), "positional") + "\nnonsense\n"
    response = post_json(admin_client, BULK_URL, {"text": text, "strict": True, "label": "strict"})
    worker()
    body = status_of(admin_client, response)
    assert body["detail"] == str(api.MSG_STRICT_ABORTED)
    assert (body["status"], body["invalid"]) == ("aborted", 1)
    assert [(line["line"], line["outcome"]) for line in body["lines"]] == [(2, "invalid")]
    assert not Account.objects.exists()
    assert AccountBatch.objects.get().status == BatchStatus.ABORTED


def test_bulk_strict_loads_when_every_line_is_valid(admin_client, material, worker):
    text = "\n".join(fakes.render_line(material(), "positional") for _ in range(3))
    response = post_json(admin_client, BULK_URL, {"text": text, "strict": True})
    worker()
    assert (status_of(admin_client, response)["status"], Account.objects.count()) == ("loaded", 3)


def test_bulk_with_nothing_new_creates_nothing(admin_client, worker):
    existing = AccountFactory()
    response = post_json(
        admin_client, BULK_URL, {"text": f"{existing.email}----{existing.access_token}"}
    )
    worker()
    body = status_of(admin_client, response)
    assert (body["created"], body["duplicates"]) == (0, 1)
    assert Account.objects.count() == 1


def test_bulk_refuses_a_label_too_long_or_with_control_characters(admin_client, material):
    line = fakes.render_line(material(), "positional")
    for label in ("x" * 101, "tab\there"):
        response = post_json(admin_client, BULK_URL, {"text": line, "label": label})
        assert response.status_code == 400 and "label" in response.json()
    assert not AccountBatch.objects.exists()


def test_a_batchs_status_is_its_uploaders_alone(admin_client, client_with, material):
    uploader = client_with("accounts.add_accountbatch")
    response = post_json(uploader, BULK_URL, {"text": fakes.render_line(material(), "positional")})
    url = response.json()["status_url"]
    assert uploader.get(url).status_code == 200
    assert admin_client.get(url).status_code == 200  # a superuser sees every batch
    stranger = client_with("accounts.add_accountbatch")
    assert stranger.get(url).status_code == 404
    assert (
        stranger.get(reverse("api-account-batch", kwargs={"batch_id": 10**17})).status_code == 404
    )


@pytest.mark.parametrize(
    "body, content_type",
    [
        ("{}", "application/json"),
        ('{"text": ""}', "application/json"),
        ('{"text": " \\n\\t\\n"}', "application/json"),
        ("", "text/plain"),
        ("\n\n   \n", "text/plain"),
    ],
)
def test_bulk_refuses_an_empty_body(admin_client, body, content_type):
    response = admin_client.post(BULK_URL, body, content_type=content_type)
    assert response.status_code == 400
    assert response.json() == {"text": [str(api.MSG_EMPTY)]}
    assert not AccountBatch.objects.exists()


def test_bulk_refuses_an_oversized_body_before_reading_it(admin_client, settings, material):
    settings.POOL_UPLOAD_MAX_BYTES = 1000
    text = fakes.render_line(material(), "positional")
    assert len(text.encode()) > 1000
    for body, content_type in (
        (text, "text/plain"),
        (json.dumps({"text": text}), "application/json"),
    ):
        response = admin_client.post(BULK_URL, body, content_type=content_type)
        assert response.status_code == 400
        assert response.json() == {"detail": str(api.MSG_TOO_BIG % {"limit": "1000\xa0bytes"})}
    assert not AccountBatch.objects.exists()


@pytest.mark.parametrize(
    "body, content_type, expected",
    [
        # Lazy: rendered in the test, in English (at import no language is active yet).
        (b"a@example.com\x00eyJ", "text/plain", api.MSG_NOT_TEXT),
        ("a@example.com,ü".encode("latin-1"), "text/plain", api.MSG_NOT_UTF8),
        (b'{"text": "a@example.com\\u0000"}', "application/json", None),
        (b'{"text": ["a"]}', "application/json", None),
        (b'{"text": "a", "dry_run": "perhaps"}', "application/json", None),
        (b"not json", "application/json", None),
    ],
)
def test_bulk_refuses_unreadable_bodies(admin_client, body, content_type, expected):
    response = admin_client.post(BULK_URL, body, content_type=content_type)
    assert response.status_code == 400
    if expected is not None:
        assert response.json() == {"detail": str(expected)}
    assert not AccountBatch.objects.exists()


def test_bulk_refuses_other_content_types(admin_client):
    response = admin_client.post(BULK_URL, {"text": "a@example.com"})  # multipart form
    assert response.status_code == 415
    assert not AccountBatch.objects.exists()


# --- Retire ------------------------------------------------------------------------------------


def test_retire_reports_what_was_retired_and_skipped(admin_client, admin_user):
    available = AccountFactory()
    rejected = AccountFactory(status=AccountStatus.REJECTED)
    reserved = AccountFactory(
        status=AccountStatus.RESERVED,
        lease_id=uuid.uuid4(),
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )
    consumed = AccountFactory(status=AccountStatus.CONSUMED, consumed_at=timezone.now())
    ids = [available.pk, rejected.pk, reserved.pk, consumed.pk, 999999]
    response = post_json(admin_client, RETIRE_URL, {"ids": ids})
    assert response.status_code == 200
    assert response.json() == {
        "retired": sorted([available.pk, rejected.pk]),
        "skipped": sorted([reserved.pk, consumed.pk, 999999]),
    }
    statuses = dict(Account.objects.values_list("pk", "status"))
    assert statuses == {
        available.pk: "retired",
        rejected.pk: "retired",
        reserved.pk: "reserved",
        consumed.pk: "consumed",
    }
    logged = LogEntry.objects.filter(user=admin_user).values_list("object_id", flat=True)
    assert sorted(int(pk) for pk in logged) == sorted([available.pk, rejected.pk])
    again = post_json(admin_client, RETIRE_URL, {"ids": [available.pk]})
    assert again.json() == {"retired": [], "skipped": [available.pk]}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": []},
        {"ids": ["x"]},
        {"ids": [0]},
        {"ids": 5},
        {"ids": list(range(1, api.MAX_RETIRE_IDS + 2))},
    ],
)
def test_retire_refuses_bad_ids(admin_client, body):
    account = AccountFactory()
    response = post_json(admin_client, RETIRE_URL, body)
    assert response.status_code == 400 and "ids" in response.json()
    assert Account.objects.get(pk=account.pk).status == AccountStatus.AVAILABLE
