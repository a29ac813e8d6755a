"""Deciding: how many accounts an event asks for, and what each answer of the manager means.

Pure functions of their arguments (tests/webhooks/test_decisions.py; `make mutate` mutates them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.utils.translation import gettext_noop

from poolsite.messages import message_define, message_store
from webhooks.client import (
    FAILURE_BAD_KEY,
    FAILURE_BATCH_REFUSED,
    FAILURE_REDIRECT,
    ManagerAnswer,
)
from webhooks.models import AttemptOutcome, ReplenishmentPolicy, Shortfall


@dataclass(frozen=True)
class Need:
    accounts: int  # what the run sends: wanted, within the caps
    wanted: int  # what the event asks for before the caps
    capped_by: str  # a Shortfall code when the caps cut `wanted`, else ""
    explained: str  # the arithmetic, for the run's record (English)
    explained_msg: dict | None = None  # the same as a stored message (poolsite.messages)


# The arithmetic of a need, as the run's record keeps it and each reader reads it.
message_define(
    "need.formula",
    gettext_noop(
        "ceil((%(threshold)s + %(margin)s - %(counted)s) / %(seats_per_account)s) = %(raw)s"
    ),
)
message_define(
    "need.confirmed_since",
    gettext_noop("(%(current)s + %(seats_per_account)s × %(confirmed)s confirmed since)"),
)
message_define("need.at_least_one", gettext_noop(", at least 1"))
message_define("need.already_satisfied", gettext_noop("; already satisfied"))
message_define(
    "need.explained",
    gettext_noop(
        "%(formula)s%(at_least_one)s → %(wanted)s; cap per event %(event_cap)s; hourly cap "
        "%(hourly_cap)s with %(landed)s in the last hour → %(accounts)s%(satisfied)s"
    ),
)


def replenishment_need(
    *,
    threshold: int,
    current_seats: int,
    policy: ReplenishmentPolicy,
    landed_last_hour: int,
    confirmed_since: int = 0,
    at_least_one: bool = True,
) -> Need:
    """How many accounts an event asks for, within the caps, and the arithmetic.

    `confirmed_since` counts accounts the manager confirmed after the event was received: their
    seats are not in its `current_seats` yet. An event received during a run is acted on by a
    follow-up run with `at_least_one=False`, so an event those imports already satisfied sends
    nothing.
    """
    seats = current_seats + policy.seats_per_account * confirmed_since
    raw = math.ceil((threshold + policy.margin_seats - seats) / policy.seats_per_account)
    wanted = max(1, raw) if at_least_one else max(0, raw)
    room = max(0, policy.max_accounts_per_hour - landed_last_hour)
    accounts = min(wanted, policy.max_accounts_per_event, room)
    capped_by = ""
    if accounts < wanted:
        capped_by = (
            Shortfall.HOURLY_CAP if room < policy.max_accounts_per_event else Shortfall.EVENT_CAP
        )
    counted = (
        message_store(
            "need.confirmed_since",
            current=current_seats,
            seats_per_account=policy.seats_per_account,
            confirmed=confirmed_since,
        )
        if confirmed_since
        else current_seats
    )
    explained = message_store(
        "need.explained",
        formula=message_store(
            "need.formula",
            threshold=threshold,
            margin=policy.margin_seats,
            counted=counted,
            seats_per_account=policy.seats_per_account,
            raw=raw,
        ),
        at_least_one=message_store("need.at_least_one") if at_least_one else "",
        wanted=wanted,
        event_cap=policy.max_accounts_per_event,
        hourly_cap=policy.max_accounts_per_hour,
        landed=landed_last_hour,
        accounts=accounts,
        satisfied=message_store("need.already_satisfied") if wanted == 0 else "",
    )
    return Need(
        accounts=accounts,
        wanted=wanted,
        capped_by=capped_by,
        explained=explained[0],
        explained_msg=explained[1],
    )


def attempt_outcome(*, answer: ManagerAnswer, had_unknown: bool) -> AttemptOutcome:
    """What one answer of the manager means for the account sent. The only place this is decided.

    - confirmed import → consumed;
    - "already present" → consumed if an earlier attempt's outcome was unknown (that one
      landed), else rejected (it was in the manager before we sent it);
    - any other refusal → rejected;
    - wrong key, wrong URL, a redirect, a refused batch, a request shape the manager does not
      take → configuration error (the account is not at fault and goes back);
    - 5xx, timeouts, dropped connections, unreadable or cut answers → unknown: it may have landed.
    """
    status = answer.http_status
    if answer.failure in (FAILURE_REDIRECT, FAILURE_BATCH_REFUSED, FAILURE_BAD_KEY):
        return AttemptOutcome.CONFIG_ERROR
    if answer.failure or status is None:
        return AttemptOutcome.UNKNOWN
    if status in (401, 403, 404, 405, 422) or 300 <= status < 400:
        return AttemptOutcome.CONFIG_ERROR
    if status == 200 and answer.success is True:
        return AttemptOutcome.CONSUMED
    if status in (200, 400) and answer.success is False:
        if answer.already_present:
            return AttemptOutcome.CONSUMED if had_unknown else AttemptOutcome.REJECTED
        return AttemptOutcome.REJECTED
    return AttemptOutcome.UNKNOWN


# Outcomes after which the account's seats are (or may be) in the manager: they meet demand.
DELIVERED = (AttemptOutcome.CONSUMED, AttemptOutcome.UNKNOWN)
