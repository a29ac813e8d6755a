"""Demand is never dropped: events during a run, under-delivery, and the reasons recorded when it is not met."""

import pytest

from accounts.models import Account, AccountStatus
from tests.factories import AccountFactory
from tests.support.runs import ClientHook, event, run_now
from webhooks import services
from webhooks.client import ManagerClient
from webhooks.models import (
    EventStatus,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    Shortfall,
    WebhookEvent,
)
from webhooks.selectors import policy_get

pytestmark = pytest.mark.django_db


def run_with_events_during(*seat_counts, current_seats=5):
    """Run event A (5 free seats, threshold 10: 2 accounts); the given events arrive while its first import is under way."""
    event(current_seats=current_seats)
    run = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)

    def arrive(call):
        if call == 1:
            for seats in seat_counts:
                event(current_seats=seats)

    return services.run_execute(
        run_id=run.pk, client=ClientHook(ManagerClient.from_settings(), arrive)
    )


def test_an_event_during_a_run_is_acted_on_by_one_follow_up_that_credits_what_landed_since(manager):
    AccountFactory.create_batch(6)
    first = run_with_events_during(0)  # B: 0 free seats, received before A's 2 accounts landed
    assert first.consumed == 2
    follow_up = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)
    assert follow_up.trigger == RunTrigger.FOLLOW_UP

    run = run_now()
    # ceil((10 + 5 - (0 + 5 × 2)) / 5) = 1: the manager ends with exactly 3, not 2 (B dropped) nor 5.
    assert (run.need, run.consumed) == (1, 1)
    assert "5 × 2 confirmed since" in run.need_explained
    assert len(manager.imported) == 3
    assert not ReplenishmentRun.objects.filter(status=RunStatus.QUEUED).exists()


def test_a_follow_up_whose_event_was_already_satisfied_sends_nothing_and_says_so(manager):
    AccountFactory.create_batch(6)
    run_with_events_during(6)  # ceil((10 + 5 - (6 + 10)) / 5) = -1: no minimum of one here
    run = run_now()
    assert (run.need, run.reserved, run.shortfall) == (0, 0, 0)
    assert "already satisfied" in run.need_explained
    assert len(manager.imported) == 2


def test_many_events_during_a_run_make_one_follow_up_acting_on_the_newest(manager):
    AccountFactory.create_batch(8)
    run_with_events_during(9, 8, 0)
    assert ReplenishmentRun.objects.filter(status=RunStatus.QUEUED).count() == 1
    run = run_now()
    newest = WebhookEvent.objects.order_by("-id").first()
    assert (newest.status, newest.run_id, newest.current_seats) == (EventStatus.ACTED_ON, run.pk, 0)
    assert WebhookEvent.objects.filter(run=run, status=EventStatus.SUPERSEDED).count() == 2
    assert run.need == 1


def test_a_follow_up_acts_on_demand_the_first_run_left_unmet(manager):
    AccountFactory.create_batch(1)
    first = run_with_events_during(5)  # A asks for 2, the pool has 1
    assert (first.consumed, first.shortfall, first.shortfall_reason) == (1, 1, Shortfall.POOL_EMPTY)
    AccountFactory.create_batch(3)  # staff load more meanwhile
    run = run_now()
    # B (5 free seats) credits the 1 that landed: ceil((15 - 10) / 5) = 1.
    assert (run.need, run.consumed) == (1, 1)


def test_an_account_the_manager_rejects_is_replaced_from_the_pool(manager):
    AccountFactory.create_batch(4)
    manager.plan(["reject"])
    event(current_seats=5)  # 2 accounts
    run = run_now()
    assert (run.consumed, run.rejected, run.shortfall) == (2, 1, 0)


def test_rejections_stop_being_replaced_after_one_events_cap(manager):
    AccountFactory.create_batch(6)
    policy = policy_get()
    policy.max_accounts_per_event = 3
    policy.save()
    manager.plan(["reject"] * 6)
    event(current_seats=5)  # 2 accounts
    run = run_now()
    assert (run.consumed, run.rejected) == (0, 3)
    assert (run.shortfall, run.shortfall_reason) == (2, Shortfall.REJECTIONS)
    assert Account.objects.filter(status=AccountStatus.AVAILABLE).count() == 3


@pytest.mark.parametrize(
    "hourly, expected",
    [(1, (1, Shortfall.HOURLY_CAP)), (50, (0, ""))],
    ids=["hourly cap", "within the caps"],
)
def test_unmet_demand_is_recorded_with_its_reason(manager, hourly, expected):
    AccountFactory.create_batch(4)
    policy = policy_get()
    policy.max_accounts_per_hour = hourly
    policy.save()
    event(current_seats=5)
    run = run_now()
    assert (run.shortfall, run.shortfall_reason) == expected


def test_a_configuration_error_records_the_whole_demand_as_unmet(manager):
    AccountFactory.create_batch(3)
    manager.plan(["unauthorized"])
    event(current_seats=5)
    run = run_now()
    assert run.status == RunStatus.CONFIG_ERROR
    assert (run.shortfall, run.shortfall_reason) == (2, Shortfall.CONFIG_ERROR)
