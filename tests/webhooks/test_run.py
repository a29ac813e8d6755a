"""Replenishment runs against the fake manager over real HTTP: every outcome, superseding, caps."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Account, AccountStatus, UnusableReason
from devtools import fakes
from tests.factories import AccountFactory
from webhooks import services
from webhooks.client import ManagerClient
from webhooks.models import (
    AttemptOutcome,
    EventStatus,
    ImportAttempt,
    ImportMode,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    WebhookEvent,
)
from webhooks.selectors import policy_get
from webhooks.services import sending

pytestmark = pytest.mark.django_db


def event(current_seats=5, threshold=10):
    accepted = services.event_receive(
        current_seats=current_seats, threshold=threshold, message="", payload="{}", remote_addr=None
    )
    return WebhookEvent.objects.get(pk=accepted.pk)


def run_now(trigger=RunTrigger.WEBHOOK, **kwargs):
    run = ReplenishmentRun.objects.filter(status=RunStatus.QUEUED).first() or services.run_wake(
        trigger=trigger, **kwargs
    )
    return services.run_execute(run_id=run.pk)


def states(*accounts):
    return [Account.objects.get(pk=a.pk).status for a in accounts]


def test_an_event_imports_what_it_asks_for_and_marks_them_consumed(manager):
    accounts = AccountFactory.create_batch(4)
    acted = event(current_seats=5, threshold=10)  # ceil((10 + 5 - 5) / 5) = 2
    run = run_now()

    assert (run.status, run.need, run.reserved, run.consumed) == (RunStatus.FINISHED, 2, 2, 2)
    assert states(*accounts) == [AccountStatus.CONSUMED] * 2 + [AccountStatus.AVAILABLE] * 2
    assert sorted(r["email"] for r in manager.imported.values()) == sorted(
        a.email for a in accounts[:2]
    )
    assert manager.attempt_counts == {a.email: 1 for a in accounts[:2]}  # one call each
    sent = manager.requests[0]["body"]
    assert sent["import_type"] == "single" and sent["session_token"] == accounts[0].session_token
    assert "account_id" not in sent  # never invented
    acted.refresh_from_db()
    assert (acted.status, acted.run_id) == (EventStatus.ACTED_ON, run.pk)
    attempt = ImportAttempt.objects.filter(run=run).first()
    assert (attempt.http_status, attempt.outcome, attempt.mode) == (
        200,
        AttemptOutcome.CONSUMED,
        ImportMode.SINGLE,
    )
    assert "成功导入" in attempt.manager_message


def test_the_newest_pending_event_is_acted_on_and_older_ones_superseded(manager):
    AccountFactory.create_batch(5)
    old = [event(current_seats=9) for _ in range(3)]
    newest = event(current_seats=0)  # ceil(15 / 5) = 3
    run = run_now()
    assert run.need == 3 and run.consumed == 3
    assert WebhookEvent.objects.get(pk=newest.pk).status == EventStatus.ACTED_ON
    assert {WebhookEvent.objects.get(pk=e.pk).status for e in old} == {EventStatus.SUPERSEDED}


def test_running_twice_imports_once(manager):
    AccountFactory.create_batch(3)
    event()
    run = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)
    first = services.run_execute(run_id=run.pk)
    assert services.run_execute(run_id=run.pk) is None
    assert first.consumed == 2 and len(manager.requests) == 2


def test_already_present_is_rejected_unless_an_earlier_outcome_was_unknown(manager):
    known, unresolved = AccountFactory.create_batch(2)
    # Both are in the manager already (staff pasted them there by hand, or our last answer was lost).
    for account in (known, unresolved):
        manager.plan(["ok"])
        ManagerClient.from_settings().import_single(account)
    Account.objects.filter(pk=unresolved.pk).update(unknown_attempts=1, retry_after=timezone.now())

    services.run_wake(trigger=RunTrigger.MANUAL, requested_accounts=1)
    run = run_now()
    assert states(known, unresolved) == [AccountStatus.REJECTED, AccountStatus.CONSUMED]
    assert "Already in the manager" in Account.objects.get(pk=known.pk).last_error
    assert run.consumed == 1 and run.rejected == 1


@pytest.mark.parametrize(
    "behaviour", ["http500", "drop", "garbage", "landed_then_hang:3", "slow:3"]
)
def test_unknown_outcomes_go_back_for_a_retry_with_backoff(manager, behaviour):
    account = AccountFactory()
    manager.plan([behaviour])
    event(current_seats=9)
    run = run_now()
    account.refresh_from_db()
    assert run.unknown == 1 and account.status == AccountStatus.AVAILABLE
    assert account.unknown_attempts == 1 and account.retry_after > timezone.now() + timedelta(
        seconds=50
    )
    assert ImportAttempt.objects.get().outcome == AttemptOutcome.UNKNOWN

    # When the retry is due, it is re-sent first; whether it had landed or not, it ends consumed once.
    Account.objects.filter(pk=account.pk).update(retry_after=timezone.now())
    retry = run_now(trigger=RunTrigger.RETRY)
    account.refresh_from_db()
    assert account.status == AccountStatus.CONSUMED and retry.consumed == 1
    assert manager.attempt_counts == {
        account.email: 2
    }  # the call of unknown outcome, and one re-send


def test_repeated_unknown_outcomes_end_held_for_staff(manager):
    account = AccountFactory()
    manager.default = "http500"
    policy = policy_get()
    policy.retry_backoff = "1"
    policy.save()
    event(current_seats=9)
    run_now()
    Account.objects.filter(pk=account.pk).update(retry_after=timezone.now())
    run_now(trigger=RunTrigger.RETRY)
    account.refresh_from_db()
    assert (account.status, account.usable, account.unusable_reason) == (
        AccountStatus.AVAILABLE,
        False,
        UnusableReason.UNKNOWN_OUTCOMES,
    )
    assert account.unknown_attempts == 2


@pytest.mark.parametrize("behaviour", ["unauthorized", "redirect"])
def test_configuration_errors_stop_the_run_and_return_every_account(manager, behaviour):
    accounts = AccountFactory.create_batch(3)
    manager.plan([behaviour])
    event(current_seats=0)
    run = run_now()
    assert run.status == RunStatus.CONFIG_ERROR and "MANAGER_API_KEY" in run.error
    assert states(*accounts) == [AccountStatus.AVAILABLE] * 3
    assert (
        run.returned == 2
        and len([r for r in manager.requests if r["path"].startswith("/admin")]) == 1
    )
    assert not any(r["path"] == "/login" for r in manager.requests)  # the redirect was not followed


def test_a_wrong_key_is_a_configuration_error(manager, settings):
    settings.MANAGER_API_KEY = "not-the-key"
    account = AccountFactory()
    event()
    run = run_now()
    assert run.status == RunStatus.CONFIG_ERROR
    assert states(account) == [AccountStatus.AVAILABLE]
    assert ImportAttempt.objects.get().http_status == 401


def test_other_refusals_reject_the_account_with_the_reason(manager):
    account = AccountFactory()
    manager.plan(["reject"])
    event(current_seats=9)
    run_now()
    account.refresh_from_db()
    assert account.status == AccountStatus.REJECTED and account.last_error


def test_an_account_unusable_when_picked_is_never_sent(manager):
    email = "expiring@example.com"
    doomed = AccountFactory(
        email=email,
        access_token=fakes.make_access_token(email=email, lifetime=timedelta(hours=3)),
        session_token=None,
        refresh_token=None,
        at_expires_at=timezone.now() + timedelta(hours=3),
    )
    good = AccountFactory()
    event(current_seats=9)
    run = run_now()
    assert states(doomed, good) == [AccountStatus.REJECTED, AccountStatus.CONSUMED]
    assert [r["body"].get("email") for r in manager.requests] == [good.email]
    local = ImportAttempt.objects.get(account=doomed)
    assert (local.sent, local.outcome) == (False, AttemptOutcome.REJECTED)
    assert run.consumed == 1


def test_the_hourly_cap_holds(manager):
    AccountFactory.create_batch(6)
    policy = policy_get()
    policy.max_accounts_per_hour = 3
    policy.save()
    event(current_seats=0)  # asks for 3
    run_now()
    event(current_seats=0)
    second = run_now()
    assert second.need == 0 and "hourly cap 3 with 3 in the last hour" in second.need_explained
    assert Account.objects.filter(status=AccountStatus.CONSUMED).count() == 3


def test_batch_mode_reads_outcomes_per_account_from_the_stream(manager):
    accounts = AccountFactory.create_batch(3)
    policy = policy_get()
    policy.import_mode = ImportMode.BATCH
    policy.save()
    manager.plan(["cut:1"])
    event(current_seats=0)
    run = run_now()
    assert len(manager.requests) == 1
    content = manager.requests[0]["body"]["content"]
    assert "----" in content and "," not in content
    assert states(*accounts) == [
        AccountStatus.CONSUMED,
        AccountStatus.AVAILABLE,
        AccountStatus.AVAILABLE,
    ]
    assert (run.consumed, run.unknown) == (1, 2)
    assert {a.mode for a in ImportAttempt.objects.all()} == {ImportMode.BATCH}


def test_history_holds_no_secret(manager):
    account = AccountFactory()
    manager.plan(["http500"])
    event(current_seats=9)
    run_now()
    texts = " ".join(f"{a.manager_message} {a.error}" for a in ImportAttempt.objects.all())
    texts += " ".join(f"{r.error} {r.need_explained}" for r in ReplenishmentRun.objects.all())
    for secret in (account.access_token, account.session_token, account.refresh_token):
        assert secret[-16:] not in texts and secret[:24] not in texts


def test_a_run_whose_worker_died_is_recovered_and_its_account_resolved(manager):
    account = AccountFactory()
    event()
    run = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)
    # Simulate the death: the run claimed and reserved, then nothing.
    past = timezone.now() - timedelta(seconds=1)
    ReplenishmentRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, started_at=past, lease_expires_at=past
    )
    from accounts.services import account_reserve_batch

    account_reserve_batch(count=1, lease_id=run.lease_id, lease_until=past, now=past)
    ManagerClient.from_settings().import_single(account)  # it had landed

    result = services.reconcile(now=timezone.now())
    assert (result.runs_abandoned, result.accounts_recovered, result.retry_queued) == (1, 1, True)
    assert ReplenishmentRun.objects.get(pk=run.pk).status == RunStatus.ABANDONED
    recovered = ImportAttempt.objects.get(account=account)
    assert (recovered.outcome, recovered.run_id) == (AttemptOutcome.UNKNOWN, run.pk)

    retry = run_now(trigger=RunTrigger.RETRY)
    assert states(account) == [AccountStatus.CONSUMED] and retry.consumed == 1
    assert manager.attempt_counts == {account.email: 2}  # the dead run's call, and one re-send


def _replenish_tasks(status):
    from django_tasks_db.models import DBTaskResult

    from webhooks.tasks import replenish

    rows = DBTaskResult.objects.filter(status=status, task_path=replenish.module_path)
    return [row.args_kwargs["kwargs"]["run_id"] for row in rows]


def test_reconcile_hands_over_a_queued_run_whose_task_died_with_its_worker(
    manager, django_capture_on_commit_callbacks
):
    """Found while building the fault schedules: a worker killed after it took the task but before it claimed
    the run left the run queued forever, and every later event waited behind it."""
    from django_tasks_db.models import DBTaskResult

    account = AccountFactory()
    with django_capture_on_commit_callbacks(execute=True):
        event()
    run = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)
    DBTaskResult.objects.get().claim("worker-killed-before-it-claimed-the-run")

    with django_capture_on_commit_callbacks(execute=True):
        result = services.reconcile(now=timezone.now())
        again = services.reconcile(now=timezone.now())
    assert (result.queued_run_handed, again.queued_run_handed) == (
        True,
        False,
    )  # one task, not one per pass
    assert _replenish_tasks("READY") == [run.pk]

    services.run_execute(run_id=run.pk)
    assert states(account) == [AccountStatus.CONSUMED]


def test_reconcile_leaves_a_queued_run_to_the_live_run_ahead_of_it(
    manager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        event()
    first = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)
    ReplenishmentRun.objects.filter(pk=first.pk).update(
        status=RunStatus.RUNNING,
        started_at=timezone.now(),
        lease_expires_at=timezone.now() + timedelta(minutes=1),
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.run_wake(trigger=RunTrigger.MANUAL, requested_accounts=1)
    from django_tasks_db.models import DBTaskResult

    DBTaskResult.objects.update(
        status="SUCCEEDED"
    )  # the worker found the run ahead and left it queued

    result = services.reconcile(now=timezone.now())
    assert (
        not result.queued_run_handed and _replenish_tasks("READY") == []
    )  # the live run hands it over


def test_reconcile_wakes_a_run_for_events_a_dead_run_never_took(manager):
    """Found while building the fault schedules: a run killed after it was claimed but before it read the
    waiting events was abandoned, and the events waited with no run to take them."""
    account = AccountFactory()
    waiting = event(current_seats=9)
    dead = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)
    past = timezone.now() - timedelta(seconds=1)
    ReplenishmentRun.objects.filter(pk=dead.pk).update(
        status=RunStatus.RUNNING, started_at=past, lease_expires_at=past
    )

    result = services.reconcile(now=timezone.now())

    assert result.runs_abandoned == 1 and result.events_woken
    fresh = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)
    services.run_execute(run_id=fresh.pk)
    assert WebhookEvent.objects.get(pk=waiting.pk).status == EventStatus.ACTED_ON
    assert states(account) == [AccountStatus.CONSUMED]


class _FreezesOnce:
    """A manager client whose worker freezes before its first import, long enough for the run's
    lease to run out, reconcile to recover its accounts and another run to import them."""

    def __init__(self, client, while_frozen):
        self.client, self.while_frozen, self.frozen = client, while_frozen, False

    def import_single(self, account):
        if not self.frozen:
            self.frozen = True
            self.while_frozen()
        return self.client.import_single(account)

    def import_batch(self, accounts):
        if not self.frozen:
            self.frozen = True
            self.while_frozen()
        return self.client.import_batch(accounts)

    def close(self):
        self.client.close()


@pytest.mark.parametrize("mode", [ImportMode.SINGLE, ImportMode.BATCH])
def test_a_run_that_lost_its_lease_while_frozen_sends_nothing_more(manager, mode):
    """Found by the fault schedules' frozen workers: a run thawed after its lease was recovered
    went on to send the accounts it had reserved, which another run had imported meanwhile."""
    policy = policy_get()
    policy.import_mode = mode
    policy.save()
    first, second = AccountFactory.create_batch(2)
    event(current_seats=0)  # needs 3, and 2 are there to reserve
    frozen_run = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)
    arrivals = []

    def world_moves_on():
        past = timezone.now() - timedelta(seconds=1)
        ReplenishmentRun.objects.filter(pk=frozen_run.pk).update(lease_expires_at=past)
        Account.objects.filter(lease_id=frozen_run.lease_id).update(lease_expires_at=past)
        services.reconcile(now=timezone.now())  # both recovered, a retry run queued
        run_now(trigger=RunTrigger.RETRY)  # imports both
        arrivals.append(AccountFactory())  # staff load one more, which the frozen run still "needs"

    client = _FreezesOnce(ManagerClient.from_settings(), world_moves_on)
    services.run_execute(run_id=frozen_run.pk, client=client)

    third = arrivals[0]
    assert states(first, second, third) == [
        AccountStatus.CONSUMED,
        AccountStatus.CONSUMED,
        AccountStatus.AVAILABLE,
    ]
    sent = manager.attempt_counts
    if mode == ImportMode.SINGLE:
        # The call it was making when it froze cannot be taken back; nothing after it is sent.
        assert (sent[first.email], sent[second.email]) == (2, 1)
    else:
        assert (sent[first.email], sent[second.email]) == (2, 2)  # the one batch call in flight
    assert third.email not in sent  # and it reserved nothing more
    assert ReplenishmentRun.objects.get(pk=frozen_run.pk).status == RunStatus.ABANDONED


@pytest.mark.parametrize("mode", [ImportMode.SINGLE, ImportMode.BATCH])
def test_a_run_whose_lease_ran_out_before_it_sent_sends_nothing_even_before_reconcile(
    manager, monkeypatch, mode
):
    """An expired lease is a lost lease, whether or not reconcile has recovered the accounts yet:
    the worker froze between reserving and sending, its accounts still read `reserved` under its
    lease id, but the lease's time is up and another run may take them at any moment."""
    policy = policy_get()
    policy.import_mode = mode
    policy.save()
    accounts = AccountFactory.create_batch(2)
    event(current_seats=0)
    run = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)
    real_check = sending.usability_problem
    froze = []

    def freeze_after_reserving(**kwargs):
        if not froze:  # the first account's pre-send check: every account is reserved by now
            froze.append(True)
            past = timezone.now() - timedelta(seconds=1)
            assert (
                Account.objects.filter(lease_id=run.lease_id, status=AccountStatus.RESERVED).count()
                == 2
            )
            Account.objects.filter(lease_id=run.lease_id).update(lease_expires_at=past)
            ReplenishmentRun.objects.filter(pk=run.pk).update(lease_expires_at=past)
        return real_check(**kwargs)

    monkeypatch.setattr(sending, "usability_problem", freeze_after_reserving)
    services.run_execute(run_id=run.pk)

    assert froze
    assert [r for r in manager.requests if r["path"] == "/admin/teams/import"] == []
    assert not ImportAttempt.objects.filter(sent=True).exists()
    assert AccountStatus.CONSUMED not in states(*accounts)


def test_reconcile_fails_task_rows_a_killed_worker_left_running(
    manager, django_capture_on_commit_callbacks
):
    """README: reconcile clears task rows a killed worker left RUNNING, and only those."""
    from django_tasks_db.models import DBTaskResult

    from webhooks.tasks import replenish, retry_unknown

    with django_capture_on_commit_callbacks(execute=True):
        event()
    DBTaskResult.objects.get().claim("worker-alive")  # its run is still queued: not stale
    dead_run = ReplenishmentRun.objects.create(
        trigger=RunTrigger.WEBHOOK, status=RunStatus.ABANDONED
    )
    orphan = str(replenish.enqueue(run_id=dead_run.pk).id)  # its run is over
    old = str(retry_unknown.enqueue().id)  # running far longer than any task takes
    for row_id in (orphan, old):
        DBTaskResult.objects.get(pk=row_id).claim("worker-killed")
    DBTaskResult.objects.filter(pk=old).update(
        started_at=timezone.now() - services.STALE_TASK_AFTER - timedelta(seconds=1)
    )

    result = services.reconcile(now=timezone.now())

    assert result.tasks_failed == 2
    assert {
        str(pk) for pk in DBTaskResult.objects.filter(status="FAILED").values_list("pk", flat=True)
    } == {orphan, old}
    assert DBTaskResult.objects.filter(status="RUNNING").count() == 1  # the live run's task


def test_replenish_command_pushes_now_and_reports(manager, capsys):
    from django.core.management import call_command

    AccountFactory.create_batch(3)
    call_command("replenish", "--accounts", "2")
    out = capsys.readouterr().out
    assert "finished: reserved 2, consumed 2" in out
    assert len(manager.imported) == 2


def test_an_account_no_key_opens_is_held_and_the_run_goes_on_with_the_others(manager, settings):
    """Issue: one row sealed with a key this service does not have stopped every run."""
    from tests.factories import account_sealed_with_foreign_key

    sealed = account_sealed_with_foreign_key(settings)
    healthy = AccountFactory.create_batch(3)
    event(current_seats=5, threshold=10)  # asks for 2
    run = run_now()

    assert (run.status, run.consumed, run.reserved) == (RunStatus.FINISHED, 2, 2)
    assert states(*healthy) == [AccountStatus.CONSUMED] * 2 + [AccountStatus.AVAILABLE]
    held = Account.objects.get(pk=sealed.pk)
    assert (held.status, held.usable, held.unusable_reason, held.attempts) == (
        AccountStatus.AVAILABLE,
        False,
        UnusableReason.KEY_MISSING,
        0,
    )
    assert not ImportAttempt.objects.filter(account=sealed).exists()  # never recorded, never capped
    assert sealed.email not in {r["body"].get("email") for r in manager.requests}
