"""The fake seat manager, exercised over real HTTP with ``requests``.

Integration tests trust devtools/fake_manager/ to behave like the real manager described in
docs/MANAGER.md; these tests hold it to that contract: auth (401, 307 → /login),
single-mode validation and "already present", batch parsing and its NDJSON stream, every scripted
fault, the inspection API, and the out-of-process variant. No database is needed. Every request
has a timeout and every delay is short, so no test can hang.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, timedelta

import pytest
import requests

from devtools import fakes
from devtools.fake_manager import (
    IMPORT_PATH,
    LOGIN_PATH,
    MSG_ALREADY_PRESENT,
    MSG_IMPORTED,
    MSG_INVALID_TYPE,
    MSG_NO_EMAIL,
    MSG_NO_TEAM,
    MSG_NO_TOKEN,
    MSG_NO_USABLE_AT,
    MSG_NOTHING_PARSED,
    MSG_SERVER_ERROR,
    MSG_UNAUTHORIZED,
    FakeManager,
    FakeManagerProcess,
)

KEY = "test-manager-key"
TIMEOUT = 5  # seconds; generous, since every answer here is expected well under a second
SHORT_READ = (2, 0.2)  # (connect, read): for answers that are meant to come too late
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def fake():
    with FakeManager(KEY) as manager:
        yield manager


def post(fake, body, *, key=KEY, headers=None, timeout=TIMEOUT, **kwargs):
    """POST to the import API the way a careful client does: never following redirects."""
    headers = dict(headers or {})
    if key is not None:
        headers["X-API-Key"] = key
    kwargs.setdefault("allow_redirects", False)
    return requests.post(fake.import_url, json=body, headers=headers, timeout=timeout, **kwargs)


def single(account, **overrides):
    return {"import_type": "single", **account, **overrides}


def batch(*lines):
    return {"import_type": "batch", "content": "\n".join(lines)}


def events(response):
    return [json.loads(line) for line in response.iter_lines() if line]


def wait_until(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_missing_or_wrong_key_answers_401(fake, material, key):
    response = post(fake, single(material()), key=key)

    assert response.status_code == 401
    assert response.json() == {"detail": MSG_UNAUTHORIZED}
    assert fake.imported == {}


def test_wrong_key_with_html_accept_redirects_to_login(fake, material):
    response = post(fake, single(material()), key="wrong-key", headers={"Accept": BROWSER_ACCEPT})

    assert response.status_code == 307
    assert response.headers["Location"] == LOGIN_PATH


def test_a_client_that_follows_the_redirect_lands_on_a_200_login_page(fake, material):
    response = post(
        fake,
        single(material()),
        key="wrong-key",
        headers={"Accept": BROWSER_ACCEPT},
        allow_redirects=True,
    )

    # What the contract warns about: status 200, but an HTML page, and nothing imported.
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert [r.status_code for r in response.history] == [307]
    assert [(r["method"], r["path"]) for r in fake.requests] == [
        ("POST", IMPORT_PATH),
        ("POST", LOGIN_PATH),
    ]
    assert fake.imported == {}
    assert requests.get(fake.base_url + LOGIN_PATH, timeout=TIMEOUT).status_code == 200


def test_json_preferred_over_html_gets_401_not_a_redirect(fake, material):
    accept = "application/json, text/html;q=0.5"

    response = post(fake, single(material()), key="wrong-key", headers={"Accept": accept})

    assert response.status_code == 401


@pytest.mark.parametrize("key", [None, "", KEY])
def test_a_manager_without_a_key_refuses_every_import(material, key):
    with FakeManager(api_key=None) as fake:
        response = post(fake, single(material()), key=key)

    assert response.status_code == 401
    assert response.json() == {"detail": MSG_UNAUTHORIZED}


# --- request validation (FastAPI's 422s, the manager's 400s) ------------------------------


def test_undecodable_json_is_422_before_the_key_is_checked(fake):
    response = requests.post(
        fake.import_url,
        data=b'{"import_type": ',
        headers={"X-API-Key": "wrong-key", "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("body", "error_type", "loc"),
    [
        (["single"], "model_attributes_type", ["body"]),
        ({}, "missing", ["body", "import_type"]),
        ({"import_type": "single", "email": 5}, "string_type", ["body", "email"]),
        ({"import_type": 1}, "string_type", ["body", "import_type"]),
    ],
)
def test_a_body_of_the_wrong_shape_is_422(fake, body, error_type, loc):
    response = post(fake, body)

    assert response.status_code == 422
    assert [(e["type"], e["loc"]) for e in response.json()["detail"]] == [(error_type, loc)]


def test_a_wrong_shape_with_a_wrong_key_is_401(fake):
    # FastAPI runs the key check (a dependency) before it validates the decoded body.
    assert post(fake, ["single"], key="wrong-key").status_code == 401


def test_a_form_encoded_body_is_422(fake):
    response = requests.post(
        fake.import_url, data={"import_type": "single"}, headers={"X-API-Key": KEY}, timeout=TIMEOUT
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "model_attributes_type"


def test_an_unknown_import_type_is_the_side_effect_free_probe(fake):
    response = post(fake, {"import_type": "probe"})

    assert response.status_code == 400
    assert response.json() == {"success": False, "error": MSG_INVALID_TYPE}
    assert fake.imported == {} and fake.attempt_counts == {}


def test_single_without_any_token_is_refused(fake, material):
    account = material(access_token=None, session_token=None, refresh_token=None)

    response = post(fake, single(account))

    assert response.status_code == 400
    assert response.json() == {"success": False, "error": MSG_NO_TOKEN}


# --- single mode --------------------------------------------------------------------------


def test_single_import_then_the_same_account_is_already_present(fake, material):
    account = material()
    body = single(account, email=None)  # the email comes from the access token

    first = post(fake, body)
    second = post(fake, body)

    assert first.status_code == 200
    assert first.json() == {
        "success": True,
        "team_id": 1,
        "email": account["email"],
        "message": MSG_IMPORTED,
        "error": None,
    }
    assert second.status_code == 400
    assert second.json() == {
        "success": False,
        "team_id": None,
        "email": account["email"],
        "message": None,
        "error": MSG_ALREADY_PRESENT,
    }
    identity = account["account_id"]
    record = fake.imported[identity]
    assert {name: record[name] for name in fakes.FIELDS} == account
    assert (record["team_id"], record["mode"]) == (1, "single")
    assert fake.accept_counts == {identity: 1}
    assert fake.attempt_counts == {identity: 2}


def test_the_identity_is_the_account_id_if_given_else_the_email(fake, material):
    with_id = material()
    without_id = material(account_id=None)
    without_id["email"] = without_id["email"].upper()  # the AT's claim is lower case: still a match

    assert post(fake, single(with_id)).status_code == 200
    assert post(fake, single(without_id)).status_code == 200

    assert set(fake.imported) == {with_id["account_id"], without_id["email"].lower()}


def test_a_given_email_must_match_the_access_tokens(fake, material):
    account = material()

    response = post(fake, single(account, email="someone-else@example.com"))

    assert response.status_code == 400
    assert response.json()["success"] is False
    assert "someone-else@example.com" in response.json()["error"]
    assert account["email"] in response.json()["error"]
    assert fake.imported == {}


@pytest.mark.parametrize(
    ("hours_left", "renewal", "status"),
    [
        (7, {}, 400),
        (7, {"refresh_token": "rt_only-without-client-id"}, 400),
        (7, {"session_token": "st"}, 200),
        (7, {"refresh_token": "rt_x", "client_id": "app_x"}, 200),
        (9, {}, 200),
        (-1, {"session_token": "st"}, 200),
    ],
)
def test_an_access_token_with_under_8_hours_left_needs_a_renewal_path(
    fake, rng, hours_left, renewal, status
):
    email = fakes.make_email(rng)
    at = fakes.make_access_token(email=email, lifetime=timedelta(hours=hours_left), rng=rng)
    if "session_token" in renewal:
        renewal["session_token"] = fakes.make_session_token(rng=rng)

    response = post(fake, {"import_type": "single", "access_token": at, **renewal})

    assert response.status_code == status
    if status == 400:
        assert response.json()["error"] == MSG_NO_USABLE_AT
    else:
        # Even a renewed account is known by the email of the token it came with.
        assert response.json()["email"] == email


def test_an_access_token_without_an_email_needs_one_given(fake, rng, material):
    account = material(access_token=fakes.make_access_token(email=None, rng=rng))

    refused = post(fake, single(account, email=None))
    accepted = post(fake, single(account))

    assert (refused.status_code, refused.json()["error"]) == (400, MSG_NO_EMAIL)
    assert accepted.status_code == 200


# --- scripted behaviours ------------------------------------------------------------------


def test_the_plan_is_consumed_one_per_import_call_then_the_default(fake, material):
    accounts = [material() for _ in range(3)]  # a rejected account would stay rejected
    fake.plan(["http500", "reject"])

    statuses = [post(fake, single(account)).status_code for account in accounts]
    fake.default = "http500"
    after_default = post(fake, single(accounts[2]))

    assert statuses == [500, 400, 200]
    assert after_default.status_code == 500
    assert [r["behaviour"] for r in fake.requests] == ["http500", "reject", "ok", "http500"]
    assert fake.accept_counts == {accounts[2]["account_id"]: 1}


def test_http500_and_reject_answer_like_the_manager_and_record_nothing(fake, material):
    fake.plan(["http500", "reject"])

    server_error = post(fake, single(material()))
    rejected = post(fake, single(material()))

    assert server_error.json() == {"success": False, "error": MSG_SERVER_ERROR}
    assert (rejected.status_code, rejected.json()["error"]) == (400, MSG_NO_TEAM)
    assert fake.imported == {}


def test_reject_leaves_an_account_already_held_as_already_present(fake, material):
    # ChatGPT still finds the Team of an account the manager holds: a scripted "no Team" answer
    # applies to new accounts only, so a fault schedule cannot make the fake contradict itself.
    account = material()
    fake.plan(["ok", "reject"])

    first = post(fake, single(account))
    again = post(fake, single(account))

    assert first.json()["success"] is True
    assert (again.status_code, again.json()["error"]) == (400, MSG_ALREADY_PRESENT)
    assert fake.accept_counts == {account["account_id"]: 1}


def test_an_account_without_a_team_stays_without_one(fake, material):
    account = material()
    fake.plan(["reject", "ok"])

    first = post(fake, single(account))
    again = post(fake, single(account))

    assert [r.json()["error"] for r in (first, again)] == [MSG_NO_TEAM, MSG_NO_TEAM]
    assert fake.imported == {}


def test_unauthorized_answers_as_for_a_wrong_key(fake, material):
    fake.plan(["unauthorized", "unauthorized"])

    plain = post(fake, single(material()))
    browser = post(fake, single(material()), headers={"Accept": BROWSER_ACCEPT})

    assert (plain.status_code, plain.json()) == (401, {"detail": MSG_UNAUTHORIZED})
    assert (browser.status_code, browser.headers["Location"]) == (307, LOGIN_PATH)
    assert fake.imported == {}


def test_slow_answers_after_the_delay(fake, material):
    fake.plan(["slow:0.3"])

    started = time.monotonic()
    response = post(fake, single(material()))

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_slow_still_lands_when_the_client_has_given_up(fake, material):
    account = material()
    fake.plan(["slow:0.4"])

    with pytest.raises(requests.exceptions.ReadTimeout):
        post(fake, single(account), timeout=SHORT_READ)

    assert wait_until(lambda: account["account_id"] in fake.imported)


def test_drop_closes_the_connection_without_an_answer_and_nothing_lands(fake, material):
    account = material()
    fake.plan(["drop"])

    with pytest.raises(requests.exceptions.ConnectionError):
        post(fake, single(account))

    assert fake.imported == {}
    assert fake.attempt_counts == {account["account_id"]: 1}
    assert fake.requests[0]["status"] is None


@pytest.mark.parametrize("behaviour", ["landed_then_drop", "cut:1"])
def test_landed_then_drop_lands_and_a_retry_reports_already_present(fake, material, behaviour):
    account = material()
    fake.plan([behaviour])

    with pytest.raises(requests.exceptions.ConnectionError):
        post(fake, single(account))
    retry = post(fake, single(account))

    # The retry after an ambiguous outcome is safe, and its answer proves the first one landed.
    assert (retry.status_code, retry.json()["error"]) == (400, MSG_ALREADY_PRESENT)
    assert fake.accept_counts == {account["account_id"]: 1}
    assert fake.attempt_counts == {account["account_id"]: 2}


def test_landed_then_hang_lands_before_the_clients_read_timeout(fake, material):
    account = material()
    fake.plan(["landed_then_hang:0.5"])

    with pytest.raises(requests.exceptions.ReadTimeout):
        post(fake, single(account), timeout=SHORT_READ)

    assert account["account_id"] in fake.imported


def test_garbage_is_a_200_whose_body_is_not_json(fake, material):
    fake.plan(["garbage"])

    response = post(fake, single(material()))

    assert response.status_code == 200
    with pytest.raises(requests.exceptions.JSONDecodeError):
        response.json()
    assert fake.imported == {}


def test_redirect_answers_307_to_login_whatever_the_key(fake, material):
    fake.plan(["redirect"])

    response = post(fake, single(material()))

    assert (response.status_code, response.headers["Location"]) == (307, LOGIN_PATH)
    assert fake.imported == {}


@pytest.mark.parametrize("spec", ["nope", "slow", "slow:x", "slow:-1", "cut:1.5", "ok:1", 3])
def test_invalid_behaviours_are_refused_when_scripted(fake, spec):
    with pytest.raises(ValueError):
        fake.plan(["ok", spec])
    with pytest.raises(ValueError):
        fake.default = spec
    # Refused as a whole: nothing of the bad script is kept.
    assert (fake.state()["plan"], fake.default) == ([], "ok")


# --- batch mode ---------------------------------------------------------------------------


def test_batch_parses_every_line_format_and_streams_ndjson(fake, material):
    accounts = [material() for _ in fakes.LINE_FORMATS]
    lines = [fakes.render_line(account, fmt) for account, fmt in zip(accounts, fakes.LINE_FORMATS)]

    response = post(fake, batch(*lines), stream=True)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert response.headers["Transfer-Encoding"] == "chunked"
    stream = events(response)
    assert stream[0] == {"type": "start", "total": 5}
    assert [e["current"] for e in stream[1:-1]] == [1, 2, 3, 4, 5]
    assert [e["last_result"]["email"] for e in stream[1:-1]] == [a["email"] for a in accounts]
    assert all(e["last_result"]["success"] for e in stream[1:-1])
    assert stream[-1] == {"type": "finish", "total": 5, "success_count": 5, "failed_count": 0}
    imported = fake.imported
    for account, fmt in zip(accounts, fakes.LINE_FORMATS):
        record = imported[account["account_id"]]
        assert (record["email"], record["access_token"]) == (
            account["email"],
            account["access_token"],
        )
        # The comma line goes through the manager's lossy fallback: its session token is lost.
        expected_st = None if fmt == "positional" else account["session_token"]
        assert record["session_token"] == expected_st, fmt


def test_batch_deduplicates_lines_by_email_first_wins(fake, material):
    first = material()
    second = material(email=first["email"].upper(), access_token=None)

    content = batch(
        fakes.render_line(first, "delimited-dash"), fakes.render_line(second, "delimited-pipe")
    )

    response = post(fake, content, stream=True)

    stream = events(response)
    assert stream[0] == {"type": "start", "total": 1}
    assert list(fake.imported) == [first["account_id"]]


def test_batch_reports_each_accounts_outcome_in_its_progress_line(fake, rng, material):
    present = material()
    post(fake, single(present))
    short_at = fakes.make_access_token(
        email="short@example.com", lifetime=timedelta(hours=2), rng=rng
    )
    short_lived = material(
        email="short@example.com", access_token=short_at, session_token=None, refresh_token=None
    )
    fresh = material(account_id=None)
    lines = [fakes.render_line(a, "delimited-dash") for a in (present, short_lived, fresh)]

    stream = events(post(fake, batch(*lines), stream=True))

    results = {
        e["last_result"]["email"]: e["last_result"] for e in stream if e["type"] == "progress"
    }
    assert results[present["email"]]["error"] == MSG_ALREADY_PRESENT
    assert results["short@example.com"]["error"] == MSG_NO_USABLE_AT
    assert results[fresh["email"]]["success"] is True
    assert results[fresh["email"]]["account_id"] == "未指定"
    assert stream[-1] == {"type": "finish", "total": 3, "success_count": 1, "failed_count": 2}


def test_batch_with_nothing_to_import_answers_one_error_line(fake):
    response = post(fake, batch("hello", "someone@example.com", ""), stream=True)

    assert response.status_code == 200
    assert events(response) == [{"type": "error", "error": MSG_NOTHING_PARSED}]


def test_a_cut_stream_delivers_k_results_and_only_those_land(fake, material):
    accounts = [material() for _ in range(3)]
    fake.plan(["cut:1"])
    response = post(
        fake, batch(*(fakes.render_line(a, "delimited-dash") for a in accounts)), stream=True
    )
    received = []

    assert response.status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for line in response.iter_lines():
            received.append(json.loads(line))

    assert [e["type"] for e in received] == ["start", "progress"]
    assert list(fake.imported) == [accounts[0]["account_id"]]
    assert fake.attempt_counts == {a["account_id"]: 1 for a in accounts}


def test_reject_in_batch_fails_every_account_inside_a_200_stream(fake, material):
    fake.plan(["reject"])

    stream = events(post(fake, batch(fakes.render_line(material(), "delimited-tab")), stream=True))

    assert stream[1]["last_result"]["error"] == MSG_NO_TEAM
    assert stream[-1]["failed_count"] == 1
    assert fake.imported == {}


def test_answer_faults_replace_the_whole_batch_answer(fake, material):
    accounts = [material() for _ in range(2)]
    body = batch(*(fakes.render_line(a, "delimited-dash") for a in accounts))
    fake.plan(["http500", "landed_then_drop"])

    assert post(fake, body).status_code == 500
    with pytest.raises(requests.exceptions.ConnectionError):
        post(fake, body)

    assert set(fake.imported) == {a["account_id"] for a in accounts}


# --- inspection ---------------------------------------------------------------------------


def test_the_request_log_masks_the_key_and_records_what_was_answered(fake, material):
    account = material()
    fake.plan(["ok", "drop"])

    post(fake, single(account))
    with pytest.raises(requests.exceptions.ConnectionError):
        post(fake, single(account))

    first, second = fake.requests
    assert first["headers"]["X-API-Key"] == "…" + KEY[-4:]
    assert first["body"]["access_token"] == account["access_token"]  # in-process: full body
    assert (first["method"], first["path"]) == ("POST", IMPORT_PATH)
    assert (first["behaviour"], first["status"]) == ("ok", 200)
    assert (second["behaviour"], second["status"]) == ("drop", None)


def test_concurrent_imports_of_one_account_are_accepted_once(fake, material):
    account = material()
    barrier = threading.Barrier(8)
    statuses = []

    def import_it():
        barrier.wait(timeout=TIMEOUT)
        statuses.append(post(fake, single(account)).status_code)

    threads = [threading.Thread(target=import_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)

    assert sorted(statuses) == [200] + [400] * 7
    assert fake.accept_counts == {account["account_id"]: 1}
    assert fake.attempt_counts == {account["account_id"]: 8}


def test_state_carries_no_token_values(fake, material):
    account = material()
    post(fake, single(account))
    post(fake, batch(fakes.render_line(material(), "delimited-dash")), stream=True).close()

    text = json.dumps(fake.state(), ensure_ascii=False)

    for name in ("access_token", "session_token", "refresh_token"):
        assert account[name] not in text
    assert KEY not in text
    assert fake.state()["requests"][1]["body"]["content"] == "<redacted: 1 lines>"


def test_reset_forgets_everything(fake, material):
    fake.plan(["drop", "drop"])
    fake.default = "reject"
    with pytest.raises(requests.exceptions.ConnectionError):
        post(fake, single(material()))

    fake.reset()

    assert post(fake, single(material())).json()["team_id"] == 1
    assert fake.default == "ok"
    assert len(fake.requests) == 1


# --- out of process -----------------------------------------------------------------------


def test_the_subprocess_serves_and_is_scripted_through_the_control_api(material):
    account = material()
    with FakeManagerProcess(api_key="proc-key") as process:
        assert post(process, single(account), key="proc-key").status_code == 200

        process.plan(["http500"], default="ok")
        assert process.state()["plan"] == ["http500"]
        assert post(process, single(account), key="proc-key").status_code == 500
        assert post(process, single(account), key="proc-key").json()["error"] == MSG_ALREADY_PRESENT

        state = process.state()
        assert state["accept_counts"] == {account["account_id"]: 1}
        assert state["attempt_counts"] == {account["account_id"]: 3}
        assert [r["status"] for r in state["requests"]] == [200, 500, 400]
        assert account["access_token"] not in json.dumps(state)
        with pytest.raises(ValueError):
            process.plan(["bogus"])

        process.reset()
        assert process.state()["imported"] == {}

    assert process.returncode == 0  # SIGTERM ends it cleanly


# --- the fake's own reading rules (docs/MANAGER.md) ----------------------------------------


def test_the_fake_imports_nothing_from_the_product():
    """A misreading by the product must not be shared by the fake that tests it: no module of the
    package (its state, handler, process wrapper, command line, rules) imports the product or
    Django, checked in a fresh interpreter that imports every one of them."""
    import pkgutil
    import subprocess
    import sys

    import devtools.fake_manager as package

    modules = [package.__name__] + [
        f"{package.__name__}.{module.name}" for module in pkgutil.iter_modules(package.__path__)
    ]
    parts = {"state", "handler", "process", "protocol", "rules", "cli", "__main__"}
    assert {m.rsplit(".", 1)[-1] for m in modules} >= parts, modules
    code = (
        "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('accounts', 'webhooks', 'apitokens', 'poolsite', 'tests', 'django')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_the_rules_read_an_access_tokens_email_and_expiry():
    from datetime import datetime

    from devtools.fake_manager import rules

    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    at = fakes.make_access_token(email="Team.Lead@Example.com", expires_at=expires)
    assert rules.read_claims(at) == rules.Claims("team.lead@example.com", expires)
    assert rules.read_claims(
        fakes.make_access_token(email=None, expires_at=expires)
    ) == rules.Claims(None, expires)
    header, _, signature = at.split(".")
    for payload in (b'{"exp": true}', b'{"exp": "1"}', b"[1]", b"not json"):
        import base64

        part = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
        assert rules.read_claims(f"{header}.{part}.{signature}") is None, payload


@pytest.mark.parametrize(
    "part, kind",
    [
        ("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln", "jwt"),
        ("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aXY.Y2lwaGVy.dGFn", "jwe"),
        ("a.b-c+d@mail.example.net", "email"),
        ("0F8FAD5B-D9CB-469F-A165-70867728950E", "uuid"),
        ("rt_abc.DEF-123", "refresh_token"),
        ("rt-abc", "refresh_token"),
        ("app_XyZ123", "client_id"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9", None),  # two pieces
        ("eyJhbGciOiJkaXIifQ.a.aXY.Y2lwaGVy.dGFn", None),  # a JWE's key piece is empty
        ("xyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln", None),
        ("user@localhost", None),
        ("rt_", None),
        ("app_", None),
        ("0f8fad5b-d9cb-469f-a165-70867728950", None),
    ],
)
def test_the_rules_tell_each_kind_of_part_by_its_shape(part, kind):
    from devtools.fake_manager import rules

    found = {
        name
        for name, check in [
            ("jwt", rules.looks_like_jwt),
            ("jwe", rules.looks_like_jwe),
            ("email", rules.looks_like_email),
            ("uuid", rules.looks_like_uuid),
            ("refresh_token", rules.looks_like_refresh_token),
            ("client_id", rules.looks_like_client_id),
        ]
        if check(part)
    }
    assert found == ({kind} if kind else set())


def test_the_fake_shows_only_the_last_four_characters_of_a_secret():
    from devtools.fake_manager.rules import masked

    assert (masked("rt_secretvalueWXYZ"), masked("abcd"), masked("")) == ("…WXYZ", "…", "")
