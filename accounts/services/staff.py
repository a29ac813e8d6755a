"""Staff actions on pool accounts: retire, notes, requeue, retry, release."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, DateTimeField, F, Q, Value, When
from django.db.models.functions import Least
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from accounts import crypto
from accounts.models import (
    Account,
    AccountStatus,
    UnusableReason,
)
from accounts.parser import ParsedAccount, parse_lines
from accounts.selectors import account_existing_digests
from accounts.services._common import admin_log, rows_update_locked
from accounts.services.leases import lease_expired_changes
from accounts.services.preparing import _pending
from accounts.services.reports import _unusable_code
from accounts.tokens import interpolate, mask

logger = logging.getLogger(__name__)


RETIRABLE = (AccountStatus.AVAILABLE, AccountStatus.REJECTED)
LOG_RETIRED = "Retired."
LOG_NOTES = "Changed notes."


def account_retire(*, account_ids: Iterable[int], by) -> list[Account]:
    """Take accounts out of the pool for good, with an admin-log row per account.

    Only accounts nobody is working on can be retired: a reserved account is being imported right
    now and settles on its own; a consumed one is already in the manager.
    """
    with transaction.atomic():
        targets = rows_update_locked(
            Account.objects.filter(pk__in=list(account_ids), status__in=RETIRABLE),
            status=AccountStatus.RETIRED,
            updated_at=timezone.now(),
        )
        admin_log(by=by, objects=targets, message=LOG_RETIRED)
    return targets


def account_set_notes(*, account: Account, notes: str, by) -> None:
    """Only the notes column is written: a full-row save could undo a concurrent reservation."""
    with transaction.atomic():
        Account.objects.filter(pk=account.pk).update(notes=notes, updated_at=timezone.now())
        admin_log(by=by, objects=[account], message=LOG_NOTES)
    account.notes = notes


# --- Staff actions: requeue, retry, release --------------------------------------------------
# Each is one conditional UPDATE whose row count is checked, with its admin-log rows written in
# the same transaction.

# The fields staff may replace when requeueing, in the order the line for the parser is built:
# in the ----format the first JWT is read as the access token, so it must come before the session token.
REQUEUE_FIELDS = (
    "email",
    "access_token",
    "session_token",
    "refresh_token",
    "client_id",
    "account_id",
)

MSG_NOT_REJECTED = _("Only a rejected account can be edited and requeued; this one is %(status)s.")
MSG_REQUEUE_MISREAD = _("This was not read as the %(field)s: check that it is in the right box.")
MSG_REQUEUE_UNUSABLE = _("Not requeued, it could still not be imported: %(reason)s")
MSG_REQUEUE_DUPLICATE = _("Another pool account (#%(id)s) has the same %(what)s.")
MSG_REQUEUE_SEALED = _(
    "The stored %(field)s cannot be decrypted with the configured keys: enter it again."
)
MSG_REQUEUE_CONFLICT = _(
    "Another pool account was given the same credentials meanwhile; nothing was changed."
)
_DUPLICATE_WHAT = {
    "identity_hash": _("email and account id"),
    "access_token_hash": _("access token"),
    "session_token_hash": _("session token"),
    "refresh_token_hash": _("refresh token"),
}
LOG_REQUEUED = "Edited (%s) and requeued."
LOG_REQUEUED_UNCHANGED = "Requeued unchanged."

# Held for staff: after unknown outcomes, or sealed with a key that was missing (and is back).
RETRYABLE = Q(status=AccountStatus.REJECTED) | Q(
    status=AccountStatus.AVAILABLE,
    usable=False,
    unusable_reason__in=[UnusableReason.UNKNOWN_OUTCOMES, UnusableReason.KEY_MISSING],
)
LOG_RETRIED = "Retried: back in the pool."
LOG_RELEASED = (
    "Released a reservation whose lease had expired; counted as an attempt with an unknown outcome."
)


class RequeueRefused(Exception):
    """Why an account was not requeued: (form field or None, message) pairs; nothing was changed."""

    def __init__(self, problems: list[tuple[str | None, object]]):
        super().__init__("; ".join(str(message) for _field, message in problems))
        self.problems = problems


def _fresh_retry_budget(now: datetime) -> dict:
    """The retry counters of an account staff put back, as UPDATE expressions.

    A fresh budget, not a clean slate: an account with an earlier attempt of unknown outcome may
    have landed, and that knowledge decides what a later "already present" answer means. So it
    keeps one unknown attempt, due at once; an account without one starts from zero.
    """
    return {
        "unknown_attempts": Least(F("unknown_attempts"), Value(1)),
        "retry_after": Case(
            When(unknown_attempts__gt=0, then=Value(now)),
            default=None,
            output_field=DateTimeField(),
        ),
    }


@sensitive_variables("changes", "material", "line", "parsed", "got", "pending")
def account_requeue(
    *, account_id: int, changes: dict[str, str], by, now: datetime | None = None
) -> Account:
    """Put a rejected account back in the pool after staff edited it. Blank changes keep a value.

    The edited account is read by the one parser, as a line of the manager's ----format, so it
    passes exactly the checks a load applies; each given value must be read as the field it was
    given for; it must be importable; and its recomputed lookup hashes must not match another
    pool account. Raises RequeueRefused with every problem found.
    """
    unknown = set(changes) - set(REQUEUE_FIELDS)
    if unknown:
        raise ValueError(f"not requeue fields: {sorted(unknown)}")
    now = now or timezone.now()
    account = Account.objects.get(pk=account_id)
    if account.status != AccountStatus.REJECTED:
        raise RequeueRefused([(None, MSG_NOT_REJECTED % {"status": account.get_status_display()})])
    sealed = [
        f
        for f in REQUEUE_FIELDS
        if isinstance(getattr(account, f), crypto.Undecryptable) and not changes.get(f)
    ]
    if sealed:
        raise RequeueRefused(
            [
                (
                    f,
                    interpolate(
                        MSG_REQUEUE_SEALED, {"field": Account._meta.get_field(f).verbose_name}
                    ),
                )
                for f in sealed
            ]
        )
    material = {f: (changes.get(f) or getattr(account, f) or "").strip() for f in REQUEUE_FIELDS}
    line = "----".join(value for value in material.values() if value)
    min_lifetime = timedelta(hours=settings.POOL_MIN_AT_LIFETIME_HOURS)
    parsed = next(iter(parse_lines([line], now=now, min_at_lifetime=min_lifetime)), None)
    if parsed is not None and not parsed.valid:
        raise RequeueRefused([(None, problem.message) for problem in parsed.errors])
    misread = [
        f
        for f in REQUEUE_FIELDS
        if material[f] and (parsed is None or not _read_as(parsed.account, f, material[f]))
    ]
    if misread:
        problems = []
        for f in misread:
            label = Account._meta.get_field(f).verbose_name
            problems.append(
                (f if changes.get(f) else None, interpolate(MSG_REQUEUE_MISREAD, {"field": label}))
            )
        raise RequeueRefused(problems)
    if _unusable_code(parsed):
        reason = next(p.message for p in parsed.warnings if p.code in UnusableReason.values)
        raise RequeueRefused([(None, interpolate(MSG_REQUEUE_UNUSABLE, {"reason": reason}))])
    pending = _pending(parsed)
    existing = account_existing_digests(digests=pending.lookups)
    clashes = [
        (
            None,
            interpolate(
                MSG_REQUEUE_DUPLICATE, {"id": existing[d], "what": _DUPLICATE_WHAT[column]}
            ),
        )
        for column, values in pending.lookups.items()
        for d in values
        if existing.get(d, account.pk) != account.pk
    ]
    if clashes:
        raise RequeueRefused(clashes)
    got = parsed.account
    try:
        with transaction.atomic():
            updated = Account.objects.filter(pk=account.pk, status=AccountStatus.REJECTED).update(
                email=got.email or "",
                access_token=got.access_token,
                session_token=got.session_token,
                refresh_token=got.refresh_token,
                access_token_hint=mask(got.access_token),
                session_token_hint=mask(got.session_token),
                refresh_token_hint=mask(got.refresh_token),
                client_id=got.client_id or "",
                account_id=got.account_id or "",
                **pending.digests,
                at_email=got.at_email or "",
                at_expires_at=got.at_expires_at,
                usable=True,
                unusable_reason="",
                status=AccountStatus.AVAILABLE,
                last_error="",
                last_error_msg=None,
                updated_at=now,
                **_fresh_retry_budget(now),
            )
            if updated != 1:
                account.refresh_from_db(fields=["status"])
                raise RequeueRefused(
                    [(None, MSG_NOT_REJECTED % {"status": account.get_status_display()})]
                )
            edited = [f for f in REQUEUE_FIELDS if changes.get(f)]
            message = LOG_REQUEUED % ", ".join(edited) if edited else LOG_REQUEUED_UNCHANGED
            admin_log(by=by, objects=[account], message=message)
    except IntegrityError:
        # A load or another requeue stored the same credentials between the check and the UPDATE.
        raise RequeueRefused([(None, MSG_REQUEUE_CONFLICT)]) from None
    account.refresh_from_db()
    return account


def _read_as(parsed: ParsedAccount, field: str, value: str) -> bool:
    # The parser lower-cases emails and account ids; everything else it keeps as given.
    expected = value.lower() if field in ("email", "account_id") else value
    return getattr(parsed, field) == expected


def account_retry(*, account_ids: Iterable[int], by, now: datetime | None = None) -> list[Account]:
    """Back to the pool: accounts the manager rejected, and those held after unknown outcomes."""
    now = now or timezone.now()
    with transaction.atomic():
        targets = rows_update_locked(
            Account.objects.filter(RETRYABLE, pk__in=list(account_ids)),
            status=AccountStatus.AVAILABLE,
            usable=True,
            unusable_reason="",
            last_error="",
            last_error_msg=None,
            updated_at=now,
            **_fresh_retry_budget(now),
        )
        admin_log(by=by, objects=targets, message=LOG_RETRIED)
    return targets


@dataclass
class ReleaseResult:
    released: list[Account]
    # Reserved under a lease that has not run out: a worker is importing them right now.
    in_flight: list[Account]


def account_release_stuck(
    *, account_ids: Iterable[int], by, now: datetime | None = None
) -> ReleaseResult:
    """Return reservations whose lease expired to the pool, as account_recover_expired_leases does.

    Whether the dead worker's request reached the manager is unknown, so each counts one unknown
    attempt and is due for re-sending at once. A lease that has not expired is left alone.
    """
    now = now or timezone.now()
    ids = list(account_ids)
    reserved = Account.objects.filter(pk__in=ids, status=AccountStatus.RESERVED)
    with transaction.atomic():
        targets = rows_update_locked(
            reserved.filter(lease_expires_at__lt=now), **lease_expired_changes(now)
        )
        admin_log(by=by, objects=targets, message=LOG_RELEASED)
    return ReleaseResult(
        released=targets, in_flight=list(reserved.filter(lease_expires_at__gte=now).order_by("pk"))
    )
