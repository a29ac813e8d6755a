"""The two pure decisions of a run: how many accounts an event asks for, and what an answer means."""

import pytest
from django.utils import translation

from poolsite.messages import message_render
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
    need = replenishment_need(
        threshold=threshold, current_seats=current, policy=POLICY, landed_last_hour=landed
    )
    assert need.accounts == expected
    assert need.explained.endswith(f"→ {expected}")
    # The same arithmetic kept as a stored message renders, in English, as the text.
    with translation.override("en"):
        assert message_render(need.explained_msg, "") == need.explained


@pytest.mark.parametrize(
    "seats_per_account, shortfall, expected",
    [
        (5, 1, 1),  # 1 seat short still takes a whole account
        (5, 4, 1),
        (5, 5, 1),
        (5, 6, 2),  # one seat over a whole account rounds up, never down
        (5, 9, 2),
        (5, 10, 2),
        (5, 11, 3),
        (3, 7, 3),
        (3, 9, 3),
        (1, 7, 7),
        (4, 17, 5),
    ],
)
def test_need_rounds_a_part_account_up(seats_per_account, shortfall, expected):
    """A first event's need is the shortfall in whole accounts, rounded up (no cap in reach)."""
    policy = ReplenishmentPolicy(
        seats_per_account=seats_per_account,
        margin_seats=0,
        max_accounts_per_event=100,
        max_accounts_per_hour=100,
    )
    need = replenishment_need(
        threshold=shortfall, current_seats=0, policy=policy, landed_last_hour=0
    )
    assert need.accounts == expected


@pytest.mark.parametrize(
    "landed, expected", [(0, 10), (40, 10), (41, 9), (49, 1), (50, 0), (51, 0)]
)
def test_need_is_capped_by_the_event_cap_and_the_room_left_in_the_hour(landed, expected):
    need = replenishment_need(
        threshold=500, current_seats=0, policy=POLICY, landed_last_hour=landed
    )
    assert need.accounts == expected


def test_the_need_is_explained_with_its_arithmetic():
    explained = replenishment_need(
        threshold=10, current_seats=3, policy=POLICY, landed_last_hour=45
    ).explained
    assert explained == (
        "ceil((10 + 5 - 3) / 5) = 3, at least 1 → 3; cap per event 10; hourly cap 50 with 45 in the last hour → 3"
    )


def test_a_need_acted_on_after_a_run_explains_it_has_no_minimum():
    explained = replenishment_need(
        threshold=10, current_seats=20, policy=POLICY, landed_last_hour=0, at_least_one=False
    ).explained
    assert explained == (
        "ceil((10 + 5 - 20) / 5) = -1 → 0; cap per event 10; hourly cap 50 with 0 in the last hour"
        " → 0; already satisfied"
    )


def test_need_follows_the_policy():
    policy = ReplenishmentPolicy(
        seats_per_account=3, margin_seats=0, max_accounts_per_event=100, max_accounts_per_hour=100
    )
    assert (
        replenishment_need(
            threshold=10, current_seats=1, policy=policy, landed_last_hour=0
        ).accounts
        == 3
    )


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
        (
            answer(200, False, "未能从文本中提取任何 Token", FAILURE_BATCH_REFUSED),
            False,
            AttemptOutcome.CONFIG_ERROR,
        ),
        (answer(500, False, "导入失败: boom"), False, AttemptOutcome.UNKNOWN),
        (answer(502, None, "", FAILURE_UNREADABLE), False, AttemptOutcome.UNKNOWN),
        (answer(200, None, "<html>", FAILURE_UNREADABLE), False, AttemptOutcome.UNKNOWN),
        (answer(None, None, "read timed out", FAILURE_TIMEOUT), False, AttemptOutcome.UNKNOWN),
        (answer(None, None, "reset", FAILURE_CONNECTION), True, AttemptOutcome.UNKNOWN),
        (answer(None, None, "", FAILURE_STREAM_CUT), False, AttemptOutcome.UNKNOWN),
        (answer(None, None, "", FAILURE_NOT_IN_STREAM), False, AttemptOutcome.UNKNOWN),
        (answer(200, None, "{}"), False, AttemptOutcome.UNKNOWN),  # 200 without a verdict
        # A failure to read the answer wins over whatever status and verdict came with it.
        (
            answer(200, True, "成功导入 1 个 Team 账号", FAILURE_STREAM_CUT),
            False,
            AttemptOutcome.UNKNOWN,
        ),
        (answer(400, False, ALREADY, FAILURE_UNREADABLE), False, AttemptOutcome.UNKNOWN),
        (answer(404, None, "", FAILURE_CONNECTION), False, AttemptOutcome.UNKNOWN),
    ],
)
def test_outcome(given, had_unknown, expected):
    assert attempt_outcome(answer=given, had_unknown=had_unknown) == expected


@pytest.mark.parametrize(
    "given",
    [
        answer(401, None, "未登录或 API Key 无效"),
        answer(403, None, "Forbidden"),
        answer(404, None, '{"detail":"Not Found"}'),
        answer(405, None, '{"detail":"Method Not Allowed"}'),
        answer(422, None, '{"detail":[]}'),
        answer(300, None, ""),
        answer(301, None, "/login"),
        answer(302, None, "/login"),
        answer(303, None, "/login"),
        answer(307, None, "/login"),
        answer(308, None, "/login"),
        answer(399, None, ""),
        answer(307, None, "/login", FAILURE_REDIRECT),
        answer(None, None, "", FAILURE_REDIRECT),
        answer(200, False, "未能从文本中提取任何 Token", FAILURE_BATCH_REFUSED),
    ],
    ids=lambda a: f"{a.http_status}-{a.failure or 'answer'}",
)
@pytest.mark.parametrize("had_unknown", [False, True])
def test_every_configuration_error_is_a_configuration_error(given, had_unknown):
    """Wrong key, wrong URL or method, a shape the manager refuses, any redirect, a refused batch:
    the manager is misconfigured, not the account, and it must not be consumed nor rejected."""
    assert attempt_outcome(answer=given, had_unknown=had_unknown) == AttemptOutcome.CONFIG_ERROR


@pytest.mark.parametrize("status", [200, 201, 299, 400, 402, 406, 409, 410, 429, 500, 503])
def test_statuses_next_to_the_configuration_errors_are_not_configuration_errors(status):
    assert (
        attempt_outcome(answer=answer(status, None, ""), had_unknown=False)
        != AttemptOutcome.CONFIG_ERROR
    )


def test_redaction_of_manager_text():
    from devtools import fakes
    from poolsite.text import REDACTED, redact

    at = fakes.make_access_token(email="a@x.com")
    st, rt = fakes.make_session_token(), fakes.make_refresh_token()
    text = redact(
        f"bad token {at} and {st} / {rt} for a@x.com 0f8fad5b-d9cb-469f-a165-70867728950e"
    )
    assert at[:20] not in text and st[-20:] not in text and rt[-12:] not in text
    assert text.count(REDACTED) == 3
    assert "a@x.com" in text and "0f8fad5b-d9cb-469f-a165-70867728950e" in text


@pytest.mark.parametrize(
    "value, ok",
    [
        ("60,300,1800", True),
        (" 5 , 10 ", True),
        ("1", True),
        ("", False),
        ("1,,2", False),
        ("a,b", False),
        ("-1", False),
    ],
)
def test_retry_delays_are_validated(value, ok):
    from django.core.exceptions import ValidationError

    policy = ReplenishmentPolicy(pk=1, retry_backoff=value)
    try:
        policy.clean_fields()
        valid = True
    except ValidationError as exc:
        valid = "retry_backoff" not in exc.message_dict
    assert valid is ok


@pytest.mark.parametrize(
    "current, confirmed, expected",
    [
        (0, 2, 1),  # the worked example: ceil((10 + 5 - (0 + 5 × 2)) / 5)
        (0, 0, 3),
        (4, 1, 2),  # ceil((15 - 9) / 5)
        (5, 2, 0),  # exactly met by what landed since
        (6, 2, 0),  # more than met: never negative
        (1, 3, 0),
    ],
)
def test_a_follow_up_credits_the_accounts_confirmed_since_its_event_and_asks_for_no_minimum(
    current, confirmed, expected
):
    need = replenishment_need(
        threshold=10,
        current_seats=current,
        policy=POLICY,
        landed_last_hour=0,
        confirmed_since=confirmed,
        at_least_one=False,
    )
    assert (need.accounts, need.wanted) == (expected, expected)
    assert need.explained.endswith("already satisfied") is (expected == 0)
    if confirmed:
        assert f"({current} + 5 × {confirmed} confirmed since)" in need.explained


def test_a_first_event_always_asks_for_one_even_when_its_count_is_met():
    policy = ReplenishmentPolicy(
        seats_per_account=5, margin_seats=0, max_accounts_per_event=10, max_accounts_per_hour=50
    )
    first = replenishment_need(threshold=10, current_seats=10, policy=policy, landed_last_hour=0)
    follow_up = replenishment_need(
        threshold=10, current_seats=10, policy=policy, landed_last_hour=0, at_least_one=False
    )
    assert (first.accounts, follow_up.accounts) == (1, 0)


@pytest.mark.parametrize(
    "landed, expected",
    [
        (0, (10, 12, "event_cap")),
        (45, (5, 12, "hourly_cap")),
        (40, (10, 12, "event_cap")),  # both caps leave 10: the event's is named
        (38, (10, 12, "event_cap")),
        (39, (10, 12, "event_cap")),
        (41, (9, 12, "hourly_cap")),
    ],
)
def test_a_capped_need_says_which_cap_cut_it(landed, expected):
    need = replenishment_need(
        threshold=60, current_seats=5, policy=POLICY, landed_last_hour=landed
    )  # wants 12
    assert (need.accounts, need.wanted, need.capped_by) == expected


def test_a_need_within_the_caps_names_no_cap():
    assert (
        replenishment_need(
            threshold=10, current_seats=5, policy=POLICY, landed_last_hour=0
        ).capped_by
        == ""
    )
