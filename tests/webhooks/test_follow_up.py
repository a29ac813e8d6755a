"""After the hand-off: each imported Team followed in the manager, its status and history kept."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.models import Account
from alerts.models import AlertCondition, AlertState
from tests.factories import AccountFactory
from tests.support.runs import run_now
from tests.support.users import staff_with
from webhooks import follow_up
from webhooks.follow_up import RateLimit
from webhooks.models import (
    FollowedTeam,
    FollowUpRound,
    ImportMode,
    RoundStatus,
    TeamStatus,
    TeamStatusChange,
    TeamTotals,
)
from webhooks.selectors import policy_get, team_counts_in_manager

pytestmark = pytest.mark.django_db


def imported(manager, n, *, mode=ImportMode.SINGLE):
    policy = policy_get()
    policy.import_mode = mode
    policy.save()
    accounts = AccountFactory.create_batch(n)
    run = run_now(trigger="manual", requested_accounts=n)
    assert run.consumed == n
    return accounts


def check(**options):
    out = StringIO()
    call_command("follow_up", stdout=out, **options)
    return out.getvalue()


def status_of(account):
    return FollowedTeam.objects.get(account=account).status


@pytest.mark.parametrize("mode", [ImportMode.SINGLE, ImportMode.BATCH])
def test_every_confirmed_import_keeps_the_managers_team_id(manager, mode):
    accounts = imported(manager, 2, mode=mode)
    ids = {record["email"]: record["team_id"] for record in manager.imported.values()}
    followed = FollowedTeam.objects.select_related("account")
    assert {f.account.email: f.team_id for f in followed} == {
        a.email: ids[a.email] for a in accounts
    }
    assert all(f.status == "" and f.checked_at is None for f in followed)


def test_an_account_settled_by_already_present_is_not_followed(manager):
    account = AccountFactory()
    manager.plan(["ok"])
    from webhooks.client import ManagerClient

    ManagerClient.from_settings().import_single(account)  # staff put it in the manager by hand
    Account.objects.filter(pk=account.pk).update(unknown_attempts=1, retry_after=timezone.now())
    run_now(trigger="retry")
    assert not FollowedTeam.objects.exists()
    assert team_counts_in_manager()["not_followed"] == 1


def test_a_round_records_each_status_and_keeps_every_change(manager):
    active, banned, full, gone = imported(manager, 4)
    teams = {record["email"]: record["team_id"] for record in manager.imported.values()}
    assert "Teams asked 4, status changes 4" in check()
    assert {status_of(a) for a in (active, banned, full, gone)} == {TeamStatus.ACTIVE}
    team = FollowedTeam.objects.get(account=active)
    assert (team.current_members, team.max_members) == (1, 6) and team.expires_at > timezone.now()

    manager.team_set(teams[banned.email], status="banned")
    manager.team_set(teams[full.email], status="full", current_members=6)
    manager.team_remove(teams[gone.email])
    assert "Teams asked 4, status changes 3" in check()
    assert [status_of(a) for a in (active, banned, full, gone)] == [
        "active",
        "banned",
        "full",
        "gone",
    ]
    history = list(
        TeamStatusChange.objects.filter(team__account=banned)
        .order_by("id")
        .values_list("old_status", "new_status")
    )
    assert history == [("", "active"), ("active", "banned")]
    assert FollowedTeam.objects.get(account=full).current_members == 6


def test_pool_status_counts_the_teams_in_the_manager(manager):
    first, second, _third = imported(manager, 3)
    check()
    manager.team_set(FollowedTeam.objects.get(account=first).team_id, status="banned")
    manager.team_set(FollowedTeam.objects.get(account=second).team_id, status="expired")
    check()
    AccountFactory(status="consumed", consumed_at=timezone.now())  # consumed before ids were kept
    out = StringIO()
    call_command("pool_status", "--json", stdout=out)
    in_manager = json.loads(out.getvalue())["in_manager"]
    assert in_manager == {
        "active": 1,
        "full": 0,
        "expired": 1,
        "error": 0,
        "banned": 1,
        "gone": 0,
        "not_followed": 1,
        "never_checked": 0,
    }


@pytest.mark.parametrize("behaviour", ["http500", "drop", "garbage", "cut:0", "slow:3"])
def test_an_answer_that_cannot_be_read_leaves_the_last_known_state_for_the_next_round(
    manager, behaviour
):
    (account,) = imported(manager, 1)
    check()
    manager.team_set(FollowedTeam.objects.get(account=account).team_id, status="banned")
    manager.info_plan([behaviour])
    assert "without a usable answer 1" in check()
    assert status_of(account) == TeamStatus.ACTIVE
    assert "status changes 1" in check()
    assert status_of(account) == TeamStatus.BANNED


@pytest.mark.parametrize("behaviour", ["unauthorized", "redirect"])
def test_a_refused_key_stops_the_round_and_raises_the_configuration_alert(manager, behaviour):
    imported(manager, 2)
    manager.info_plan([behaviour])
    with pytest.raises(CommandError, match="refused the Team-info request"):
        check()
    round_ = FollowUpRound.objects.get()
    assert round_.status == RoundStatus.CONFIG_ERROR and round_.asked == 0
    assert len(manager.info_calls()) == 1  # it stopped at the first refusal
    assert AlertState.objects.get(condition=AlertCondition.CONFIG_ERROR).active


def test_teams_seen_expired_or_gone_twice_are_asked_no_more(manager):
    expired, gone, active = imported(manager, 3)
    manager.team_set(FollowedTeam.objects.get(account=expired).team_id, status="expired")
    manager.team_remove(FollowedTeam.objects.get(account=gone).team_id)
    check()
    check()
    calls = len(manager.info_calls())
    assert "Teams asked 1" in check()
    assert len(manager.info_calls()) == calls + 1
    assert status_of(active) == TeamStatus.ACTIVE


def test_the_tokens_in_the_managers_answer_are_never_kept(manager):
    (account,) = imported(manager, 1)
    check()
    team = FollowedTeam.objects.get(account=account)
    kept = json.dumps(
        list(FollowedTeam.objects.values())
        + list(TeamStatusChange.objects.values())
        + list(FollowUpRound.objects.values()),
        default=str,
    )
    for token in (
        account.access_token,
        account.session_token,
        account.refresh_token,
        account.client_id,
    ):
        assert token[-16:] not in kept
    assert team.status == TeamStatus.ACTIVE


def test_the_rate_limit_spaces_the_requests_evenly():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(round(seconds, 3))
        now[0] += seconds

    limit = RateLimit(5, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limit.wait()
    assert slept == [0.2, 0.2, 0.2]
    assert RateLimit(0, clock=lambda: now[0], sleep=sleep).wait() is None and len(slept) == 3


def test_a_round_goes_on_in_slices_and_a_second_round_waits(manager):
    imported(manager, 3)
    round_ = follow_up.team_round_queue(enqueue=False)
    assert follow_up.team_round_queue() is None  # single flight
    first = follow_up.team_round_run(round_id=round_.pk, seconds=0)
    assert (first.asked, first.done) == (0, False)
    round_.refresh_from_db()
    assert round_.status == RoundStatus.RUNNING  # handed to the next slice, a task of its own
    rest = follow_up.team_round_run(round_id=round_.pk, seconds=None, rate=0)
    assert (rest.asked, rest.done) == (3, True)
    assert FollowUpRound.objects.get().status == RoundStatus.FINISHED


def test_bans_in_a_day_raise_their_alert(manager):
    accounts = imported(manager, 3)
    check()
    for account in accounts:
        manager.team_set(FollowedTeam.objects.get(account=account).team_id, status="banned")
    check()
    state = AlertState.objects.get(condition=AlertCondition.BANNED_TEAMS)
    assert state.active


def test_reconcile_queues_a_round_when_one_is_due(manager, settings):
    imported(manager, 1)
    settings.FOLLOW_UP_EVERY_HOURS = 6
    assert follow_up.team_round_due(now=timezone.now())
    round_ = follow_up.team_round_queue()
    assert not follow_up.team_round_due(now=timezone.now())
    assert follow_up.team_round_due(now=round_.created_at + timedelta(hours=6, seconds=1))


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    statuses=st.lists(
        st.sampled_from(["active", "full", "expired", "error", "banned", "gone"]),
        min_size=3,
        max_size=3,
    ),
    faults=st.lists(st.sampled_from(["ok", "http500", "garbage", "cut:0", "drop"]), max_size=3),
)
def test_a_round_never_changes_an_accounts_state_in_the_pool(manager_session, statuses, faults):
    manager, accounts = manager_session
    before = list(Account.objects.order_by("pk").values())
    for account, status in zip(accounts, statuses):
        team_id = FollowedTeam.objects.get(account=account).team_id
        if status == "gone":
            manager.team_remove(team_id)
        elif team_id in manager.teams():
            manager.team_set(team_id, status=status)
    manager.info_plan(faults)
    check(rate=0)
    assert list(Account.objects.order_by("pk").values()) == before


@pytest.fixture
def manager_session(manager):
    return manager, imported(manager, 3)


def test_the_batches_page_judges_each_batch_and_supplier(admin_client, manager):
    from accounts.models import AccountBatch

    good = AccountBatch.objects.create(
        label="november", supplier="Alice", source="admin", status="loaded"
    )
    bad = AccountBatch.objects.create(
        label="december", supplier="Bob", source="admin", status="loaded"
    )
    AccountFactory.create_batch(2, batch=good)
    AccountFactory.create_batch(2, batch=bad)
    AccountFactory(batch=bad, status="rejected", last_error="该 Token 没有关联任何 Team 账户")
    run_now(trigger="manual", requested_accounts=4)
    check()
    long_ago = timezone.now() - timedelta(days=40)
    FollowedTeam.objects.update(imported_at=long_ago)
    for team in FollowedTeam.objects.filter(account__batch=bad):
        manager.team_set(team.team_id, status="banned")
    check()
    TeamStatusChange.objects.filter(new_status="banned").update(at=long_ago + timedelta(days=10))
    follow_up.batch_report_make(now=timezone.now())  # as the next round's end does

    page = admin_client.get("/admin/webhooks/followedteam/batches/")
    assert page.status_code == 200
    assert page.context["made_at"] is not None
    rows = {
        (r["batch"] or r["supplier"]): r
        for r in page.context["report"]["batches"] + page.context["report"]["suppliers"]
    }
    assert (rows[bad.pk]["loaded"], rows[bad.pk]["consumed"], rows[bad.pk]["rejected"]) == (3, 2, 1)
    assert rows[bad.pk]["in_manager"]["banned"] == 2 and rows[bad.pk]["median_days_to_ban"] == 10.0
    assert (rows[bad.pk]["survival_7d"], rows[bad.pk]["survival_30d"]) == (100, 0)
    assert (rows[good.pk]["survival_7d"], rows[good.pk]["survival_30d"]) == (100, 100)
    assert rows["Bob"]["reasons"] == [["该 Token 没有关联任何 Team 账户", 1]]
    csv = b"".join(
        admin_client.get(
            "/admin/webhooks/followedteam/batches/", {"format": "csv"}
        ).streaming_content
    ).decode()
    assert "supplier,,,Bob,1,3,2,1,0,0,0,0,0,2,0,0,0,10.0,100,2,0,2" in csv
    for account in Account.objects.all():
        assert account.access_token[-16:] not in csv + page.content.decode()


def test_check_now_queues_a_round_for_staff_with_the_permission(client, admin_client, manager):
    imported(manager, 1)
    client.force_login(staff_with(username="viewer"))
    assert client.post("/admin/webhooks/followedteam/check/").status_code == 403
    assert admin_client.post("/admin/webhooks/followedteam/check/").status_code == 302
    assert FollowUpRound.objects.get().status == RoundStatus.QUEUED


def test_the_dashboard_shows_the_seats_on_active_imported_teams_and_the_bans(admin_client, manager):
    accounts = imported(manager, 3)
    check()
    manager.team_set(FollowedTeam.objects.get(account=accounts[0]).team_id, status="banned")
    manager.team_set(FollowedTeam.objects.get(account=accounts[1]).team_id, current_members=4)
    check()
    page = admin_client.get("/admin/")
    teams = page.context["teams"]
    assert (teams["active_teams"], teams["active_seats"], teams["banned_last_7_days"]) == (
        2,
        2 + 5,
        1,
    )
    assert 'data-figure="active_seats">7<' in page.content.decode()


def test_the_batches_page_is_made_by_the_round_not_by_the_request(
    admin_client, manager, django_assert_max_num_queries
):
    imported(manager, 2)
    empty = admin_client.get("/admin/webhooks/followedteam/batches/")
    assert empty.context["made_at"] is None and "No report yet" in empty.content.decode()
    check()
    with django_assert_max_num_queries(
        8
    ):  # session, user, the newest report: never the pool itself
        page = admin_client.get("/admin/webhooks/followedteam/batches/")
    assert sum(row["consumed"] for row in page.context["report"]["batches"]) == 2


def test_reconcile_queues_the_periodic_round_as_make_run_relies_on(
    manager, settings, django_capture_on_commit_callbacks
):
    from webhooks import services

    imported(manager, 1)
    settings.FOLLOW_UP_EVERY_HOURS = 6
    with django_capture_on_commit_callbacks() as callbacks:
        result = services.reconcile(now=timezone.now())
    assert result.follow_up_queued and FollowUpRound.objects.get().status == RoundStatus.QUEUED
    assert callbacks  # the round's task is handed to the worker on commit
    assert not services.reconcile(
        now=timezone.now()
    ).follow_up_queued  # one at a time, not again before it is due


def live_team_totals() -> tuple[int, int, int]:
    """The dashboard's Team figures summed from every followed Team, written out here."""
    teams = list(FollowedTeam.objects.values_list("status", "max_members", "current_members"))
    active = [(m, c) for status, m, c in teams if status == TeamStatus.ACTIVE]
    seats = sum(m - c for m, c in active if m is not None and c is not None)
    return len(teams), len(active), seats


def test_the_team_totals_follow_every_import_and_every_answer_of_every_round(manager):
    """The dashboard reads kept totals (TeamTotals) instead of summing every Team: after each
    import and each round they equal the live sums, through every kind of change."""
    accounts = imported(manager, 5)
    stored = lambda: TeamTotals.objects.values_list(  # noqa: E731
        "followed", "active_teams", "active_seats"
    ).get()
    assert stored() == live_team_totals() == (5, 0, 0)
    team = {a.pk: FollowedTeam.objects.get(account=a).team_id for a in accounts}
    rounds = [
        {},  # all answer active, 1 of 6 members
        {0: {"current_members": 4}, 1: {"status": "full", "current_members": 6}},
        {0: {"status": "banned"}, 1: {"status": "active", "current_members": 2}, 2: "gone"},
        {1: {"max_members": 8}, 3: {"status": "expired"}, 4: {"current_members": 5}},
    ]
    for changes in rounds:
        for index, change in changes.items():
            if change == "gone":
                manager.team_remove(team[accounts[index].pk])
            else:
                manager.team_set(team[accounts[index].pk], **change)
        check()
        assert stored() == live_team_totals()
    assert stored() == (5, 2, (8 - 2) + (6 - 5))
    imported(manager, 1)
    assert stored() == live_team_totals() == (6, 2, 7)
    assert follow_up.team_totals_recount().active_seats == 7
