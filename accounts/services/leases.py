"""Leases: reserving accounts for an import and settling them."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_noop

from accounts import crypto
from accounts.models import (
    Account,
    AccountStatus,
    UnusableReason,
)
from accounts.selectors import STOCK_USABLE, account_stock_q
from accounts.services._common import rows_update_locked
from poolsite.messages import Stored, message_define, message_store

logger = logging.getLogger(__name__)


# --- Leases: reserving accounts for an import and settling them ------------------------------
# The pool knows leases, not the manager: a caller reserves accounts under a lease id, and then
# settles each one. Every change is one conditional UPDATE that checks the status and the lease,
# so an account is never taken by two leases and a late answer cannot settle a recovered one.
# Callers write their history row in the same transaction.

MSG_LEASE_EXPIRED = message_define(
    "accounts.lease_expired",
    gettext_noop(
        "Recovered after its lease expired: the worker stopped mid-import, outcome unknown."
    ),
)


def account_reserve_batch(
    *, count: int, lease_id, lease_until: datetime, now: datetime, unresolved: bool = False
) -> list[Account]:
    """Reserve up to `count` accounts, oldest first, under `lease_id`.

    Fresh accounts by default; with `unresolved`, those whose earlier import had an unknown
    outcome and whose retry is due. On PostgreSQL the candidates are locked in id order with
    SKIP LOCKED, so concurrent runs take different rows instead of queueing; on SQLite the
    IMMEDIATE transaction serialises writers. Either way the UPDATE re-checks the status.

    Each reserved account is decrypted on its own, inside the reserving transaction: one that no
    configured key opens is held for staff (back to available, flagged unusable, the key id in
    its last error) in that same transaction, so it is never returned, sent or counted as an
    attempt, and the pick moves on to the next accounts.
    """
    taken: list[Account] = []
    while len(taken) < count:
        opened, held = _reserve_once(
            count=count - len(taken),
            lease_id=lease_id,
            lease_until=lease_until,
            now=now,
            unresolved=unresolved,
        )
        taken.extend(opened)
        if not held:
            break
    return sorted(taken, key=lambda account: account.pk)


def _reserve_once(
    *, count: int, lease_id, lease_until: datetime, now: datetime, unresolved: bool
) -> tuple[list[Account], int]:
    """(accounts reserved that open, how many were held instead) in one transaction."""
    available = Account.objects.filter(account_stock_q(kind=STOCK_USABLE))
    if unresolved:
        candidates = available.filter(unknown_attempts__gt=0, retry_after__lte=now).order_by(
            "retry_after", "id"
        )
    else:
        candidates = available.filter(unknown_attempts=0).order_by("id")
    with transaction.atomic():
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        ids = list(candidates.values_list("id", flat=True)[:count])
        if not ids:
            return [], 0
        taken = Account.objects.filter(pk__in=ids, status=AccountStatus.AVAILABLE).update(
            status=AccountStatus.RESERVED,
            lease_id=lease_id,
            lease_expires_at=lease_until,
            updated_at=now,
        )
        if taken != len(ids):  # pragma: no cover - the lock above makes this impossible
            raise RuntimeError("Accounts changed while locked.")
        opened, held = [], 0
        for account in Account.objects.filter(pk__in=ids, lease_id=lease_id).order_by("id"):
            sealed = account_undecryptable(account=account)
            if sealed is None:
                opened.append(account)
            else:
                _hold_sealed(account=account, sealed=sealed, lease_id=lease_id, now=now)
                held += 1
    return opened, held


SECRET_FIELDS = ("access_token", "session_token", "refresh_token")
MSG_HELD_KEY_MISSING = message_define(
    "accounts.held_key_missing",
    gettext_noop(
        "Held, never sent: sealed with a key this service does not have (key id %s). Add that key to "
        "POOL_ENCRYPTION_KEY on every process, restart them, then retry the account."
    ),
)
MSG_HELD_UNDECRYPTABLE = message_define(
    "accounts.held_undecryptable",
    gettext_noop(
        "Held, never sent: its stored tokens fail authentication under the configured key (key id %s): "
        "they were altered, or the key is not the one that sealed them. Retire the account or load it again."
    ),
)


def account_undecryptable(*, account: Account) -> crypto.Undecryptable | None:
    """The first of the account's tokens that no configured key opens, or None if all open."""
    return next(
        (
            v
            for v in (getattr(account, f) for f in SECRET_FIELDS)
            if isinstance(v, crypto.Undecryptable)
        ),
        None,
    )


def _hold_sealed(
    *, account: Account, sealed: crypto.Undecryptable, lease_id, now: datetime
) -> None:
    """End the reservation of an account that cannot be opened, and hold it for staff."""
    if sealed.cause == crypto.CAUSE_UNKNOWN_KEY:
        reason = UnusableReason.KEY_MISSING
        error = message_store("accounts.held_key_missing", sealed.key_id_hex)
    else:
        reason = UnusableReason.UNDECRYPTABLE
        error = message_store("accounts.held_undecryptable", sealed.key_id_hex or "none")
    held = Account.objects.filter(
        pk=account.pk, status=AccountStatus.RESERVED, lease_id=lease_id
    ).update(
        status=AccountStatus.AVAILABLE,
        lease_id=None,
        lease_expires_at=None,
        usable=False,
        unusable_reason=reason,
        last_error=error[0],
        last_error_msg=error[1],
        updated_at=now,
    )
    if held != 1:  # pragma: no cover - reserved under this lease in this very transaction
        raise RuntimeError("Account changed while locked.")
    logger.warning("Account #%s held for staff: %s", account.pk, error[0])


def _settle(*, account_id: int, lease_id, now: datetime, **changes) -> bool:
    return (
        Account.objects.filter(
            pk=account_id, status=AccountStatus.RESERVED, lease_id=lease_id
        ).update(lease_id=None, lease_expires_at=None, updated_at=now, **changes)
        == 1
    )


def account_settle_consumed(*, account_id: int, lease_id, now: datetime) -> bool:
    """The manager confirmed the import: the account is spent, and counted in its day's rollup.

    The only writer of CONSUMED (and nothing moves an account out of it), so the rollup counts
    every consumption exactly once: in the same transaction, only when the UPDATE settled the row.
    """
    with transaction.atomic(savepoint=False):
        settled = _settle(
            account_id=account_id,
            lease_id=lease_id,
            now=now,
            status=AccountStatus.CONSUMED,
            consumed_at=now,
            attempts=F("attempts") + 1,
            retry_after=None,
            last_error="",
            last_error_msg=None,
        )
        if settled:
            consumption_count(at=now)
    return settled


_COUNT_CONSUMPTION_SQL = (
    "INSERT INTO accounts_consumptionday (day, consumed) VALUES (%s, %s)"
    " ON CONFLICT (day) DO UPDATE SET consumed = accounts_consumptionday.consumed + excluded.consumed"
)


def consumption_count(*, at: datetime, accounts: int = 1) -> None:
    """Add `accounts` consumed at `at` to that day's rollup (the day in settings.TIME_ZONE): one upsert.

    Call it in the transaction that marks them consumed.
    """
    day = timezone.localdate(at)
    with connection.cursor() as cursor:
        cursor.execute(
            _COUNT_CONSUMPTION_SQL, [connection.ops.adapt_datefield_value(day), accounts]
        )


def _last_error(error: str | Stored) -> dict:
    """The account's last error: a message of ours (code kept, shown in the reader's language), or
    the manager's own words (kept as received)."""
    if isinstance(error, tuple):
        return {"last_error": error[0], "last_error_msg": error[1]}
    return {"last_error": error, "last_error_msg": None}


def account_settle_rejected(
    *, account_id: int, lease_id, now: datetime, error: str | Stored, sent: bool = True
) -> bool:
    """The manager refused the account (or it was not sendable): staff may fix and requeue it.

    `error` is the manager's text as received, or a stored message of ours (message_store).
    """
    return _settle(
        account_id=account_id,
        lease_id=lease_id,
        now=now,
        status=AccountStatus.REJECTED,
        attempts=F("attempts") + int(sent),
        retry_after=None,
        **_last_error(error),
    )


def account_settle_unknown(
    *,
    account_id: int,
    lease_id,
    now: datetime,
    error: str | Stored,
    retry_after: datetime | None,
) -> bool:
    """No answer to rely on: back to the pool, to be re-sent after `retry_after`.

    With `retry_after` None the retries are used up: the account is held (flagged unusable)
    until staff look at it, since it may well be in the manager already.
    """
    held = retry_after is None
    return _settle(
        account_id=account_id,
        lease_id=lease_id,
        now=now,
        status=AccountStatus.AVAILABLE,
        attempts=F("attempts") + 1,
        unknown_attempts=F("unknown_attempts") + 1,
        retry_after=now if held else retry_after,
        **_last_error(error),
        **({"usable": False, "unusable_reason": UnusableReason.UNKNOWN_OUTCOMES} if held else {}),
    )


def account_release(*, account_id: int, lease_id, now: datetime) -> bool:
    """Back to the pool unsent (the run stopped before sending it): nothing to record."""
    return _settle(
        account_id=account_id, lease_id=lease_id, now=now, status=AccountStatus.AVAILABLE
    )


def lease_expired_changes(now: datetime) -> dict:
    # Whether the request reached the manager is unknown: one unknown attempt, due for re-sending
    # at once, so an "already present" answer then settles it as consumed.
    return {
        "status": AccountStatus.AVAILABLE,
        "lease_id": None,
        "lease_expires_at": None,
        "attempts": F("attempts") + 1,
        "unknown_attempts": F("unknown_attempts") + 1,
        "retry_after": now,
        **_last_error(message_store("accounts.lease_expired")),
        "updated_at": now,
    }


def account_recover_expired_leases(*, now: datetime) -> list[tuple[int, object]]:
    """Return every account whose lease ran out (its worker died) to the pool.

    Whether the dead worker's request reached the manager is unknown, so each counts one unknown
    attempt and is due for re-sending at once: an "already present" answer then settles it as
    consumed. Returns (account id, expired lease id) pairs for the caller's history rows.
    """
    with transaction.atomic():
        return rows_update_locked(
            Account.objects.filter(status=AccountStatus.RESERVED, lease_expires_at__lt=now),
            values=("pk", "lease_id"),
            **lease_expired_changes(now),
        )
