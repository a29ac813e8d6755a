"""Sending: one run's reserved accounts to the manager, and each answer settled with its attempt row."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_noop

from accounts import selectors as pool_selectors
from accounts import services as pool
from accounts.models import Account
from accounts.tokens import usability_problem
from poolsite.messages import (
    Stored,
    message_define,
    message_join,
    message_store,
    message_verbatim,
)
from webhooks.client import (
    FAILURE_BAD_KEY,
    FAILURE_BATCH_REFUSED,
    FAILURE_CONNECTION,
    FAILURE_NOT_IN_STREAM,
    FAILURE_REDIRECT,
    FAILURE_STREAM_CUT,
    FAILURE_TIMEOUT,
    FAILURE_UNREADABLE,
    FAILURE_UNRECORDED,
    ManagerAnswer,
    ManagerClient,
    batch_safe,
)
from webhooks.follow_up import team_totals_add
from webhooks.models import (
    AttemptOutcome,
    FollowedTeam,
    ImportAttempt,
    ImportMode,
    ReplenishmentPolicy,
    ReplenishmentRun,
)
from webhooks.services.decisions import attempt_outcome

logger = logging.getLogger(__name__)

# Stored texts (poolsite.messages): written in English, shown in the reader's language.
MSG_UNUSABLE_AT_PICK = message_define("webhooks.unusable_at_pick", gettext_noop("Not sent: %s"))
MSG_ALREADY_IN_MANAGER = message_define(
    "webhooks.already_in_manager",
    gettext_noop("Already in the manager before this pool sent it: %s"),
)
MSG_CONFIG_ERROR = message_define(
    "webhooks.config_error",
    gettext_noop(
        "The manager refused the request (HTTP %(status)s): check MANAGER_BASE_URL and "
        "MANAGER_API_KEY. %(answer)s"
    ),
)
MSG_LEASE_LOST = message_define(
    "webhooks.lease_lost",
    gettext_noop(
        "This run's lease on the account had expired when the answer came; recorded, not applied."
    ),
)
MSG_ANSWER_UNRECORDED = message_define(
    "webhooks.answer_unrecorded",
    gettext_noop("Sent, but the run failed before it recorded the answer (%s): outcome unknown."),
)
# An attempt's error is the short name of what went wrong on our side (webhooks.client): kept as
# it is in the text column, shown as a word of the reader's language.
FAILURE_MESSAGES = {
    failure: message_define(f"webhooks.failure.{failure}", text)
    for failure, text in (
        (FAILURE_TIMEOUT, gettext_noop("timeout")),
        (FAILURE_CONNECTION, gettext_noop("connection")),
        (FAILURE_UNREADABLE, gettext_noop("unreadable")),
        (FAILURE_REDIRECT, gettext_noop("redirect")),
        (FAILURE_STREAM_CUT, gettext_noop("stream_cut")),
        (FAILURE_BATCH_REFUSED, gettext_noop("batch_refused")),
        (FAILURE_NOT_IN_STREAM, gettext_noop("not_in_stream")),
        (FAILURE_UNRECORDED, gettext_noop("unrecorded")),
        (FAILURE_BAD_KEY, gettext_noop("bad_key")),
    )
}


def failure_stored(failure: str) -> Stored | None:
    """A FAILURE_* name as a stored message, or None for no failure."""
    if not failure:
        return None
    if failure not in FAILURE_MESSAGES:
        return message_verbatim(failure)
    return message_store(f"webhooks.failure.{failure}")


def _error_fields(error: Stored | None, *, lease_lost: bool) -> dict:
    """An attempt's error columns: `error`, followed by MSG_LEASE_LOST when the lease was lost."""
    if lease_lost:
        lost = message_store("webhooks.lease_lost")
        error = message_join(error, lost) if error else lost
    if error is None:
        return {"error": "", "error_msg": None}
    return {"error": error[0], "error_msg": error[1]}


@dataclass
class Lease:
    id: uuid.UUID
    until: datetime


class ChunkSender:
    """Sends what a run reserved, and settles each answer: the account and its attempt row together.

    Holds what is reserved and not yet sent, and what is sent and not yet recorded, so a run that
    stops at any point gives each account back the right way (release_unsent, abort).
    """

    def __init__(
        self, *, run: ReplenishmentRun, client: ManagerClient, policy: ReplenishmentPolicy
    ):
        self.run_obj = run
        self.client = client
        self.policy = policy
        # Reserved and not yet sent: released unsent if the run stops.
        self.unsent: list[tuple[Account, Lease]] = []
        # Sent, answer not yet recorded: if the run stops now they go back as unknown, never as
        # "not sent" (their re-send may answer "already present", which must settle as consumed).
        self.in_flight: list[tuple[Account, Lease]] = []
        self.in_flight_mode = ""
        self.strays: list[str] = []

    def send(
        self, chunk: list[tuple[Account, Lease]]
    ) -> tuple[list[AttemptOutcome], Stored | None]:
        """Send one reserved chunk: each account's outcome, and the configuration error that stopped it."""
        outcomes = []
        for account, lease in chunk:
            if self._sendable(account, lease):
                self.unsent.append((account, lease))
            else:
                outcomes.append(AttemptOutcome.REJECTED)
        sent, stop = self._import_unsent()
        return outcomes + sent, stop

    def _sendable(self, account: Account, lease: Lease) -> bool:
        """Re-check usability at the moment of sending: time has passed since the load."""
        now = timezone.now()
        problem = usability_problem(
            at_expires_at=account.at_expires_at,
            has_session_token=bool(account.session_token),
            has_refresh_token=bool(account.refresh_token),
            has_client_id=bool(account.client_id),
            now=now,
            min_at_lifetime=timedelta(hours=settings.POOL_MIN_AT_LIFETIME_HOURS),
        )
        if problem is None:
            return True
        error = message_store("webhooks.unusable_at_pick", problem.code)
        with transaction.atomic():
            settled = pool.account_settle_rejected(
                account_id=account.pk, lease_id=lease.id, now=now, error=error, sent=False
            )
            ImportAttempt.objects.create(
                account=account,
                run=self.run_obj,
                sent=False,
                outcome=AttemptOutcome.REJECTED,
                **_error_fields(error, lease_lost=not settled),
            )
        return False

    def _import_unsent(self) -> tuple[list[AttemptOutcome], Stored | None]:
        """Send every reserved account: their outcomes, and the configuration error that stopped it, or ""."""
        outcomes: list[AttemptOutcome] = []
        batchable = []
        if self.policy.import_mode == ImportMode.BATCH and self._drop_lost_leases():
            # The manager keeps only the first line of an email (docs/MANAGER.md, batch mode), so two
            # accounts with one email never share a batch: the second goes single below.
            emails = set()
            for account, lease in self.unsent:
                if batch_safe(account) and account.email.lower() not in emails:
                    emails.add(account.email.lower())
                    batchable.append((account, lease))
        if len(batchable) > 1:
            self.unsent = [item for item in self.unsent if item not in batchable]
            self.in_flight, self.in_flight_mode = batchable, ImportMode.BATCH
            answers = self.client.import_batch([a for a, _ in batchable])
            self.strays.extend(answers.strays)
            stop_answer = None
            while self.in_flight:
                account, lease = self.in_flight[0]
                answer = answers.by_account[account.pk]
                outcome = self._record(account, lease, answer, ImportMode.BATCH)
                self.in_flight.pop(0)
                outcomes.append(outcome)
                if outcome == AttemptOutcome.CONFIG_ERROR:
                    stop_answer = stop_answer or answer
            if stop_answer is not None:
                return outcomes, self._stop(stop_answer)
        while self.unsent:
            if not self._drop_lost_leases():
                break
            account, lease = self.unsent.pop(0)
            self.in_flight, self.in_flight_mode = [(account, lease)], ImportMode.SINGLE
            answer = self.client.import_single(account)
            outcome = self._record(account, lease, answer, ImportMode.SINGLE)
            self.in_flight.clear()
            outcomes.append(outcome)
            if outcome == AttemptOutcome.CONFIG_ERROR:
                return outcomes, self._stop(answer)
        return outcomes, None

    def _drop_lost_leases(self) -> bool:
        """Forget reserved accounts whose lease is gone; whether any are left to send.

        Reconcile recovered them (and wrote their attempt rows) while this worker was frozen,
        and another run may have imported them since: they are no longer this run's to send.
        """
        if not self.unsent:
            return False
        held = pool_selectors.account_ids_leased(
            account_ids=[a.pk for a, _ in self.unsent],
            lease_id=self.run_obj.lease_id,
            now=timezone.now(),
        )
        self.unsent = [(a, lease) for a, lease in self.unsent if a.pk in held]
        return bool(self.unsent)

    def _stop(self, answer: ManagerAnswer) -> Stored:
        self.release_unsent()
        return message_store(
            "webhooks.config_error",
            status=answer.http_status or answer.failure,
            answer=answer.text,
        )

    def release_unsent(self) -> None:
        now = timezone.now()
        for account, lease in self.unsent:
            if pool.account_release(account_id=account.pk, lease_id=lease.id, now=now):
                ReplenishmentRun.objects.filter(pk=self.run_obj.pk).update(
                    returned=F("returned") + 1
                )
        self.unsent.clear()

    def abort(self, *, error: str) -> None:
        """The run failed: accounts sent but unrecorded go back as unknown, the unsent go back unsent.

        If the database still refuses (the failure may be the database itself), they stay
        reserved and lease recovery returns them as unknown: still never as "not sent".
        """
        for account, lease in self.in_flight:
            note = message_store("webhooks.answer_unrecorded", error)
            answer = ManagerAnswer(None, None, note[0], FAILURE_UNRECORDED, note=note)
            try:
                self._record(account, lease, answer, self.in_flight_mode)
            except Exception:
                logger.exception(
                    "Could not record account %s as unknown; lease recovery will", account.pk
                )
        self.in_flight.clear()
        try:
            self.release_unsent()
        except Exception:
            logger.exception(
                "Could not release the unsent accounts of run %s; lease recovery will",
                self.run_obj.pk,
            )

    def _record(
        self, account: Account, lease: Lease, answer: ManagerAnswer, mode: str
    ) -> AttemptOutcome:
        """Settle the account and write its attempt row, in one transaction."""
        now = timezone.now()
        outcome = attempt_outcome(answer=answer, had_unknown=account.unknown_attempts > 0)
        common = {"account_id": account.pk, "lease_id": lease.id, "now": now}
        if outcome == AttemptOutcome.CONSUMED:
            settle = partial(pool.account_settle_consumed, **common)
        elif outcome == AttemptOutcome.REJECTED:
            reason = (
                message_store("webhooks.already_in_manager", answer.text)
                if answer.already_present
                else answer.text
            )
            settle = partial(pool.account_settle_rejected, **common, error=reason)
        elif outcome == AttemptOutcome.UNKNOWN:
            backoff = self.policy.backoff_seconds
            n = account.unknown_attempts
            retry_after = now + timedelta(seconds=backoff[n]) if n < len(backoff) else None
            settle = partial(
                pool.account_settle_unknown,
                **common,
                error=answer.note or answer.text or failure_stored(answer.failure) or "",
                retry_after=retry_after,
            )
        else:
            settle = partial(pool.account_release, **common)
        with transaction.atomic():
            settled = settle()
            ImportAttempt.objects.create(
                account=account,
                run=self.run_obj,
                mode=mode,
                http_status=answer.http_status,
                manager_message=answer.text,
                **_error_fields(failure_stored(answer.failure), lease_lost=not settled),
                duration_ms=answer.duration_ms,
                outcome=outcome,
                team_id=answer.team_id,
            )
            if settled and outcome == AttemptOutcome.CONSUMED and answer.team_id is not None:
                # Followed from now on (docs/FOLLOW_UP.md); "already present" carries no id.
                FollowedTeam.objects.create(
                    account=account, team_id=answer.team_id, imported_at=now
                )
                team_totals_add(followed=1)
        return outcome
