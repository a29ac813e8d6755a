"""Reserving and settling accounts: one conditional UPDATE each, taken in id order, never twice."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import selectors, services
from accounts.models import Account, AccountStatus, UnusableReason
from tests.factories import AccountFactory

pytestmark = pytest.mark.django_db


def reserve(count, **kwargs):
    now = timezone.now()
    lease = uuid.uuid4()
    return lease, services.account_reserve_batch(
        count=count, lease_id=lease, lease_until=now + timedelta(minutes=5), now=now, **kwargs
    )


def test_reserves_the_oldest_usable_available_accounts():
    retired = AccountFactory(status=AccountStatus.RETIRED)
    flagged = AccountFactory(usable=False, unusable_reason=UnusableReason.AT_EXPIRED)
    unresolved = AccountFactory(unknown_attempts=1, retry_after=timezone.now())
    oldest, second, third = AccountFactory.create_batch(3)
    lease, taken = reserve(2)
    assert [a.pk for a in taken] == [oldest.pk, second.pk]
    assert all(a.status == AccountStatus.RESERVED and a.lease_id == lease for a in taken)
    assert Account.objects.get(pk=third.pk).status == AccountStatus.AVAILABLE
    for untouched in (retired, flagged, unresolved):
        assert Account.objects.get(pk=untouched.pk).status == untouched.status


def test_a_second_reservation_never_takes_the_same_accounts():
    AccountFactory.create_batch(3)
    _, first = reserve(2)
    _, second = reserve(2)
    assert len(second) == 1 and {a.pk for a in first}.isdisjoint({a.pk for a in second})
    assert reserve(1)[1] == []


def test_unresolved_accounts_are_taken_only_when_due():
    now = timezone.now()
    due = AccountFactory(unknown_attempts=1, retry_after=now - timedelta(seconds=1))
    AccountFactory(unknown_attempts=1, retry_after=now + timedelta(minutes=5))
    AccountFactory()
    _, taken = reserve(5, unresolved=True)
    assert [a.pk for a in taken] == [due.pk]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks exist on PostgreSQL only")
def test_the_pick_locks_rows_in_id_order_and_skips_locked_ones():
    AccountFactory.create_batch(2)
    with CaptureQueriesContext(connection) as queries:
        reserve(2)
    picks = [q["sql"] for q in queries.captured_queries if "FOR UPDATE" in q["sql"]]
    assert len(picks) == 1
    assert "ORDER BY 1 ASC" in picks[0] and picks[0].startswith(
        'SELECT "accounts_account"."id" AS "id" FROM'
    )
    assert picks[0].rstrip().endswith("FOR UPDATE SKIP LOCKED")


def test_settling_checks_the_lease():
    account = AccountFactory()
    lease, _ = reserve(1)
    now = timezone.now()
    assert not services.account_settle_consumed(
        account_id=account.pk, lease_id=uuid.uuid4(), now=now
    )
    assert services.account_settle_consumed(account_id=account.pk, lease_id=lease, now=now)
    assert not services.account_settle_consumed(account_id=account.pk, lease_id=lease, now=now)
    account.refresh_from_db()
    assert (account.status, account.consumed_at, account.lease_id, account.attempts) == (
        AccountStatus.CONSUMED,
        now,
        None,
        1,
    )


def test_unknown_outcome_returns_the_account_for_a_later_retry_then_holds_it():
    account = AccountFactory()
    now = timezone.now()
    lease, _ = reserve(1)
    assert services.account_settle_unknown(
        account_id=account.pk,
        lease_id=lease,
        now=now,
        error="timeout",
        retry_after=now + timedelta(minutes=1),
    )
    account.refresh_from_db()
    assert (account.status, account.unknown_attempts, account.usable) == (
        AccountStatus.AVAILABLE,
        1,
        True,
    )
    assert account.retry_after == now + timedelta(minutes=1)
    assert reserve(1)[1] == []  # not picked as fresh stock

    Account.objects.filter(pk=account.pk).update(retry_after=now)
    lease, _ = reserve(1, unresolved=True)
    assert services.account_settle_unknown(
        account_id=account.pk, lease_id=lease, now=now, error="timeout", retry_after=None
    )
    account.refresh_from_db()
    assert (account.usable, account.unusable_reason, account.unknown_attempts) == (
        False,
        UnusableReason.UNKNOWN_OUTCOMES,
        2,
    )


def test_expired_leases_are_recovered_as_unknown_and_due_at_once():
    stuck, live = AccountFactory.create_batch(2)
    now = timezone.now()
    old_lease, new_lease = uuid.uuid4(), uuid.uuid4()
    services.account_reserve_batch(
        count=1, lease_id=old_lease, lease_until=now - timedelta(seconds=1), now=now
    )
    services.account_reserve_batch(
        count=1, lease_id=new_lease, lease_until=now + timedelta(minutes=5), now=now
    )
    recovered = services.account_recover_expired_leases(now=now)
    assert recovered == [(stuck.pk, old_lease)]
    stuck.refresh_from_db()
    assert (stuck.status, stuck.unknown_attempts, stuck.retry_after, stuck.lease_id) == (
        AccountStatus.AVAILABLE,
        1,
        now,
        None,
    )
    assert Account.objects.get(pk=live.pk).status == AccountStatus.RESERVED
    # A late answer from the dead worker's lease can no longer settle it.
    assert not services.account_settle_consumed(account_id=stuck.pk, lease_id=old_lease, now=now)


def test_an_account_whose_lease_ran_out_is_no_longer_held_by_that_lease():
    """Reserved under the lease, not yet recovered by reconcile, but past its expiry: not held."""
    held, expired = AccountFactory.create_batch(2)
    now = timezone.now()
    lease = uuid.uuid4()
    services.account_reserve_batch(
        count=2, lease_id=lease, lease_until=now + timedelta(minutes=5), now=now
    )
    Account.objects.filter(pk=expired.pk).update(lease_expires_at=now - timedelta(seconds=1))
    Account.objects.filter(pk=held.pk).update(lease_expires_at=now + timedelta(seconds=1))

    leased = selectors.account_ids_leased(
        account_ids=[held.pk, expired.pk], lease_id=lease, now=now
    )

    assert leased == {held.pk}
    assert (
        Account.objects.get(pk=expired.pk).status == AccountStatus.RESERVED
    )  # only the time is up
    assert (
        selectors.account_ids_leased(account_ids=[held.pk], lease_id=uuid.uuid4(), now=now) == set()
    )
    assert (
        selectors.account_ids_leased(
            account_ids=[held.pk], lease_id=lease, now=now + timedelta(seconds=1)
        )
        == set()
    )


def test_an_unknown_outcome_counts_an_attempt_and_keeps_the_error():
    account = AccountFactory()
    now = timezone.now()
    lease, _ = reserve(1)
    assert services.account_settle_unknown(
        account_id=account.pk,
        lease_id=lease,
        now=now,
        error="read timed out",
        retry_after=now + timedelta(minutes=1),
    )
    account.refresh_from_db()
    assert (account.attempts, account.unknown_attempts, account.last_error) == (
        1,
        1,
        "read timed out",
    )
    assert (account.lease_id, account.lease_expires_at) == (None, None)


def test_a_held_account_is_due_at_once_for_staff_not_at_a_retry_time():
    account = AccountFactory()
    now = timezone.now()
    lease, _ = reserve(1)
    assert services.account_settle_unknown(
        account_id=account.pk, lease_id=lease, now=now, error="cut", retry_after=None
    )
    account.refresh_from_db()
    assert (account.retry_after, account.usable, account.status) == (
        now,
        False,
        AccountStatus.AVAILABLE,
    )


@pytest.mark.parametrize("sent, attempts", [(True, 1), (False, 0)])
def test_a_rejection_keeps_the_reason_and_counts_only_a_sent_attempt(sent, attempts):
    account = AccountFactory()
    now = timezone.now()
    lease, _ = reserve(1)
    assert not services.account_settle_rejected(
        account_id=account.pk, lease_id=uuid.uuid4(), now=now, error="no team", sent=sent
    )
    assert services.account_settle_rejected(
        account_id=account.pk, lease_id=lease, now=now, error="no team", sent=sent
    )
    account.refresh_from_db()
    assert (account.status, account.attempts, account.last_error, account.retry_after) == (
        AccountStatus.REJECTED,
        attempts,
        "no team",
        None,
    )
    assert (account.lease_id, account.lease_expires_at, account.updated_at) == (None, None, now)
    assert not services.account_settle_rejected(
        account_id=account.pk, lease_id=lease, now=now, error="again"
    )


def test_a_release_returns_the_account_unsent_under_its_own_lease_only():
    account = AccountFactory()
    now = timezone.now()
    lease, _ = reserve(1)
    assert not services.account_release(account_id=account.pk, lease_id=uuid.uuid4(), now=now)
    assert services.account_release(account_id=account.pk, lease_id=lease, now=now)
    account.refresh_from_db()
    assert (account.status, account.attempts, account.unknown_attempts, account.lease_id) == (
        AccountStatus.AVAILABLE,
        0,
        0,
        None,
    )
    assert not services.account_release(account_id=account.pk, lease_id=lease, now=now)


def test_only_the_accounts_asked_about_are_answered_for():
    asked, other = AccountFactory.create_batch(2)
    now = timezone.now()
    lease = uuid.uuid4()
    services.account_reserve_batch(
        count=2, lease_id=lease, lease_until=now + timedelta(minutes=5), now=now
    )
    assert selectors.account_ids_leased(account_ids=[asked.pk], lease_id=lease, now=now) == {
        asked.pk
    }


def test_due_unresolved_accounts_go_in_order_of_their_retry_time():
    now = timezone.now()
    later = AccountFactory(unknown_attempts=1, retry_after=now - timedelta(seconds=1))
    earlier = AccountFactory(unknown_attempts=1, retry_after=now - timedelta(minutes=1))
    _, taken = reserve(1, unresolved=True)
    assert [a.pk for a in taken] == [earlier.pk]
    assert Account.objects.get(pk=later.pk).status == AccountStatus.AVAILABLE


def test_a_second_reservation_under_the_same_lease_returns_only_the_new_accounts():
    """A run reserves several times under its one lease id."""
    AccountFactory.create_batch(3)
    now = timezone.now()
    lease = uuid.uuid4()
    first = services.account_reserve_batch(
        count=1, lease_id=lease, lease_until=now + timedelta(minutes=5), now=now
    )
    second = services.account_reserve_batch(
        count=5, lease_id=lease, lease_until=now + timedelta(minutes=5), now=now
    )
    assert (
        len(first) == 1
        and len(second) == 2
        and {a.pk for a in first}.isdisjoint({a.pk for a in second})
    )
    assert all(a.updated_at == now for a in first + second)


def test_a_confirmed_import_clears_the_retry_time_and_the_last_error():
    account = AccountFactory(
        unknown_attempts=1, retry_after=timezone.now(), last_error="read timed out"
    )
    now = timezone.now()
    lease, _ = reserve(1, unresolved=True)
    assert services.account_settle_consumed(account_id=account.pk, lease_id=lease, now=now)
    account.refresh_from_db()
    assert (account.status, account.retry_after, account.last_error) == (
        AccountStatus.CONSUMED,
        None,
        "",
    )


def test_a_rejection_after_an_unknown_outcome_counts_the_attempt_and_clears_the_retry_time():
    account = AccountFactory(unknown_attempts=1, retry_after=timezone.now())
    now = timezone.now()
    lease, _ = reserve(1, unresolved=True)
    assert services.account_settle_rejected(
        account_id=account.pk, lease_id=lease, now=now, error="no team"
    )
    account.refresh_from_db()
    assert (account.status, account.attempts, account.retry_after) == (
        AccountStatus.REJECTED,
        1,
        None,
    )


def test_a_confirmed_import_is_one_update_and_one_upsert_in_the_callers_transaction():
    AccountFactory()
    lease, (account,) = reserve(1)
    with CaptureQueriesContext(connection) as queries:
        assert services.account_settle_consumed(
            account_id=account.pk, lease_id=lease, now=timezone.now()
        )
    assert [query["sql"].split()[0] for query in queries] == ["UPDATE", "INSERT"]


def test_reserving_no_accounts_asks_the_database_nothing(django_assert_num_queries):
    AccountFactory()
    with django_assert_num_queries(0):
        assert reserve(0)[1] == []


@pytest.mark.parametrize(
    "settle",
    [
        lambda **lease: services.account_settle_consumed(**lease),
        lambda **lease: services.account_settle_rejected(**lease, error="no team"),
        lambda **lease: services.account_settle_unknown(**lease, error="timeout", retry_after=None),
        lambda **lease: services.account_release(**lease),
    ],
    ids=["consumed", "rejected", "unknown", "released"],
)
def test_settling_one_account_leaves_the_others_of_its_lease_reserved(settle):
    AccountFactory.create_batch(2)
    lease, (settled, other) = reserve(2)
    assert settle(account_id=settled.pk, lease_id=lease, now=timezone.now())
    other.refresh_from_db()
    assert (other.status, other.lease_id) == (AccountStatus.RESERVED, lease)


def test_a_pick_that_finds_fewer_accounts_than_asked_looks_only_once():
    AccountFactory()
    with CaptureQueriesContext(connection) as queries:
        assert len(reserve(3)[1]) == 1
    reads = [q for q in queries if q["sql"].startswith("SELECT") and "accounts_account" in q["sql"]]
    assert len(reads) == 2  # the pick, and the accounts it reserved


def test_an_account_confirmed_after_an_unknown_outcome_keeps_no_error_in_any_language():
    """The error of the earlier attempt goes, as text and as its stored message: a consumed
    account's page would otherwise still say, in the reader's language, that it was lost."""
    account = AccountFactory()
    now = timezone.now()
    services.account_reserve_batch(
        count=1, lease_id=uuid.uuid4(), lease_until=now - timedelta(seconds=1), now=now
    )
    services.account_recover_expired_leases(now=now)
    account.refresh_from_db()
    assert account.last_error and account.last_error_msg is not None
    lease, taken = reserve(1, unresolved=True)
    assert [a.pk for a in taken] == [account.pk]
    assert services.account_settle_consumed(account_id=account.pk, lease_id=lease, now=now)
    account.refresh_from_db()
    assert (account.status, account.last_error, account.last_error_msg) == (
        AccountStatus.CONSUMED,
        "",
        None,
    )
