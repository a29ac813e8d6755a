"""The two pure decisions of a run: how many accounts an event asks for, and what an answer means."""

import pytest

from webhooks.client import (
    FAILURE_BATCH_REFUSED,
    FAILURE_CONNECTION,
    FAILURE_NOT_IN_STREAM,
    FAILURE_REDIRECT,
    FAILURE_STREAM_CUT,
    FAILURE_TIMEOUT,
    FAILURE_UNREADABLE,
    ManagerAnswer,
)
from webhooks.models import AttemptOutcome, ReplenishmentPolicy
from webhooks.services import attempt_outcome, replenishment_need

ALREADY = "共发现 1 个 Team 账号,但均已在系统中"
POLICY = ReplenishmentPolicy(
    seats_per_account=5, margin_seats=5, max_accounts_per_event=10, max_accounts_per_hour=50
)


@pytest.mark.parametrize(
    "threshold, current, landed, expected",
    [
        (10, 5, 0, 2),  # ceil((10 + 5 - 5) / 5)
        (10, 9, 0, 2),  # ceil(6 / 5)
        (10, 10, 0, 1),  # exactly 5 short: one account
        (10, 30, 0, 1),  # a stale or wrong count still asks for one
        (10, 0, 0, 3),
        (500, 0, 0, 10),  # capped per event
        (500, 0, 45, 5),  # capped by what is left of the hour
        (500, 0, 50, 0),  # the hour is used up
        (500, 0, 70, 0),
    ],
)
def test_need(threshold, current, landed, expected):
    need = replenishment_need(threshold=threshold, current_seats=current, policy=POLICY, landed_last_hour=landed)
    assert need.accounts == expected
    assert need.explained.endswith(f"→ {expected}")


def test_need_follows_the_policy():
    policy = ReplenishmentPolicy(seats_per_account=3, margin_seats=0, max_accounts_per_event=100, max_accounts_per_hour=100)
    assert replenishment_need(threshold=10, current_seats=1, policy=policy, landed_last_hour=0).accounts == 3


def answer(status, success=None, text="", failure=""):
    return ManagerAnswer(status, success, text, failure)


@pytest.mark.parametrize(
    "given, had_unknown, expected",
    [
        (answer(200, True, "成功导入 1 个 Team 账号"), False, AttemptOutcome.CONSUMED),
        (answer(400, False, ALREADY), True, AttemptOutcome.CONSUMED),
        (answer(400, False, ALREADY), False, AttemptOutcome.REJECTED),
        (answer(200, False, ALREADY), True, AttemptOutcome.CONSUMED),  # a batch progress line
        (answer(400, False, "该 Token 没有关联任何 Team 账户"), True, AttemptOutcome.REJECTED),
        (answer(200, False, "获取账户信息失败"), False, AttemptOutcome.REJECTED),
        (answer(401, None, "未登录或 API Key 无效"), False, AttemptOutcome.CONFIG_ERROR),
        (answer(403, None, ""), False, AttemptOutcome.CONFIG_ERROR),
        (answer(404, None, ""), False, AttemptOutcome.CONFIG_ERROR),
        (answer(422, None, "[]"), False, AttemptOutcome.CONFIG_ERROR),
        (answer(307, None, "/login", FAILURE_REDIRECT), False, AttemptOutcome.CONFIG_ERROR),
        (answer(200, False, "未能从文本中提取任何 Token", FAILURE_BATCH_REFUSED), False, AttemptOutcome.CONFIG_ERROR),
        (answer(500, False, "导入失败: boom"), False, AttemptOutcome.UNKNOWN),
        (answer(502, None, "", FAILURE_UNREADABLE), False, AttemptOutcome.UNKNOWN),
        (answer(200, None, "<html>", FAILURE_UNREADABLE), False, AttemptOutcome.UNKNOWN),
        (answer(None, None, "read timed out", FAILURE_TIMEOUT), False, AttemptOutcome.UNKNOWN),
        (answer(None, None, "reset", FAILURE_CONNECTION), True, AttemptOutcome.UNKNOWN),
        (answer(None, None, "", FAILURE_STREAM_CUT), False, AttemptOutcome.UNKNOWN),
        (answer(None, None, "", FAILURE_NOT_IN_STREAM), False, AttemptOutcome.UNKNOWN),
        (answer(200, None, "{}"), False, AttemptOutcome.UNKNOWN),  # 200 without a verdict
    ],
)
def test_outcome(given, had_unknown, expected):
    assert attempt_outcome(answer=given, had_unknown=had_unknown) == expected


def test_redaction_of_manager_text():
    from accounts.tokens import REDACTED, redact
    from tests import fakes

    at = fakes.make_access_token(email="a@x.com")
    st, rt = fakes.make_session_token(), fakes.make_refresh_token()
    text = redact(f"bad token {at} and {st} / {rt} for a@x.com 0f8fad5b-d9cb-469f-a165-70867728950e")
    assert at[:20] not in text and st[-20:] not in text and rt[-12:] not in text
    assert text.count(REDACTED) == 3
    assert "a@x.com" in text and "0f8fad5b-d9cb-469f-a165-70867728950e" in text


@pytest.mark.parametrize("value, ok", [("60,300,1800", True), (" 5 , 10 ", True), ("1", True), ("", False), ("1,,2", False), ("a,b", False), ("-1", False)])
def test_retry_delays_are_validated(value, ok):
    from django.core.exceptions import ValidationError

    policy = ReplenishmentPolicy(pk=1, retry_backoff=value)
    try:
        policy.clean_fields()
        valid = True
    except ValidationError as exc:
        valid = "retry_backoff" not in exc.message_dict
    assert valid is ok
