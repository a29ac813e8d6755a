"""Leases by the chunk, batch answers credited to the right account, and answers lost while recording."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import OperationalError
from django.utils import timezone

from accounts import services as pool
from accounts.models import Account, AccountStatus
from tests.factories import AccountFactory
from tests.support.runs import ClientHook, event, run_now
from webhooks import services
from webhooks.client import FAILURE_NOT_IN_STREAM, ManagerClient
from webhooks.models import (
    AttemptOutcome,
    ImportAttempt,
    ImportMode,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    Shortfall,
)
from webhooks.selectors import policy_get

pytestmark = pytest.mark.django_db


def batch_mode():
    policy = policy_get()
    policy.import_mode = ImportMode.BATCH
    policy.save()


def test_a_large_push_reserves_and_leases_one_chunk_at_a_time(manager, settings):
    AccountFactory.create_batch(25)
    per_call = timedelta(seconds=settings.MANAGER_CONNECT_TIMEOUT + settings.MANAGER_READ_TIMEOUT)
    seen = []

    def look(call):
        run = ReplenishmentRun.objects.get(status=RunStatus.RUNNING)
        reserved = Account.objects.filter(status=AccountStatus.RESERVED)
        seen.append(
            (
                reserved.count(),
                max(a.lease_expires_at for a in reserved) - timezone.now(),
                run.lease_expires_at - timezone.now(),
            )
        )

    run = services.run_wake(trigger=RunTrigger.MANUAL, requested_accounts=25)
    run = services.run_execute(
        run_id=run.pk, client=ClientHook(ManagerClient.from_settings(), look)
    )
    assert run.consumed == 25
    worst = per_call * services.lease_chunk() + services.lease_margin()
    assert max(count for count, _, _ in seen) == services.lease_chunk()
    assert all(
        account_lease <= worst and run_lease <= worst for _, account_lease, run_lease in seen
    )


def test_a_worker_killed_mid_push_holds_only_its_chunk_and_only_for_its_lease(manager):
    AccountFactory.create_batch(30)

    class Killed(BaseException):  # not an Exception: nothing in the run may clean up after it
        pass

    def die(call):
        if call == 12:
            raise Killed

    run = services.run_wake(trigger=RunTrigger.MANUAL, requested_accounts=30)
    with pytest.raises(Killed):
        services.run_execute(run_id=run.pk, client=ClientHook(ManagerClient.from_settings(), die))
    reserved = Account.objects.filter(status=AccountStatus.RESERVED)
    assert reserved.count() <= services.lease_chunk()
    # Once that chunk's lease is over, the next event's run recovers it and goes on.
    later = max(a.lease_expires_at for a in reserved) + timedelta(seconds=1)
    assert later - timezone.now() < timedelta(minutes=8)
    recovered = services.reconcile(now=later)
    assert recovered.runs_abandoned == 1 and recovered.accounts_recovered == 9
    # 11 landed and 9 may have: the other 10 of the push are recorded as unmet, with the reason.
    run.refresh_from_db()
    assert (run.status, run.shortfall, run.shortfall_reason) == (
        RunStatus.ABANDONED,
        10,
        Shortfall.LEASE_LOST,
    )


def test_two_accounts_with_one_email_never_share_a_batch_and_each_is_credited_its_own_answer(
    manager,
):
    batch_mode()
    first = AccountFactory(
        email="same@example.com", account_id="11111111-1111-4111-8111-111111111111"
    )
    second = AccountFactory(
        email="same@example.com", account_id="22222222-2222-4222-8222-222222222222"
    )
    other = AccountFactory()
    event(current_seats=0)  # 3 accounts
    run = run_now()
    assert run.consumed == 3
    held = {record["account_id"] for record in manager.imported.values()}
    assert {first.account_id, second.account_id} <= held
    batches = [
        r["body"]["content"] for r in manager.requests if r["body"].get("import_type") == "batch"
    ]
    assert len(batches) == 1 and batches[0].count("same@example.com") == 1
    singles = [r["body"] for r in manager.requests if r["body"].get("import_type") == "single"]
    assert [body["account_id"] for body in singles] == [second.account_id]
    assert states_of(first, second, other) == [AccountStatus.CONSUMED] * 3


def states_of(*accounts):
    return [Account.objects.get(pk=a.pk).status for a in accounts]


class _StreamServer:
    """A loopback server answering every batch with the given NDJSON lines."""

    def __init__(self, lines):
        payload = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_stream_line_that_matches_no_account_sent_is_kept_and_credited_to_none():
    account = AccountFactory.build(
        pk=1, email="a@example.com", account_id="11111111-1111-4111-8111-111111111111"
    )
    plain = AccountFactory.build(pk=2, email="b@example.com", account_id="")
    stray = {
        "email": "a@example.com",
        "account_id": "99999999-9999-4999-8999-999999999999",
        "success": True,
        "message": "ok",
    }
    mine = {
        "email": "b@example.com",
        "account_id": "未指定",
        "success": True,
        "message": "成功导入 1 个 Team 账号",
    }
    server = _StreamServer(
        [{"type": "start", "total": 2}]
        + [{"type": "progress", "last_result": result} for result in (stray, mine)]
        + [{"type": "finish", "total": 2}]
    )
    try:
        client = ManagerClient(base_url=server.url, api_key="k", connect_timeout=1, read_timeout=2)
        answers = client.import_batch([account, plain])
    finally:
        server.close()
    assert (
        answers.by_account[1].failure == FAILURE_NOT_IN_STREAM
        and answers.by_account[1].success is None
    )
    assert answers.by_account[2].success is True
    assert len(answers.strays) == 1 and "99999999-9999-4999-8999-999999999999" in answers.strays[0]


def test_an_answer_lost_while_recording_leaves_its_account_unknown_never_unsent(
    manager, monkeypatch
):
    batch_mode()
    accounts = AccountFactory.create_batch(3)
    settled = pool.account_settle_consumed
    calls = []

    def busy_on_the_second(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise OperationalError("database is locked")
        return settled(**kwargs)

    monkeypatch.setattr(pool, "account_settle_consumed", busy_on_the_second)
    event(current_seats=0)  # 3 accounts, one batch
    with pytest.raises(OperationalError):
        run_now()
    monkeypatch.setattr(pool, "account_settle_consumed", settled)
    first, second, third = (Account.objects.get(pk=a.pk) for a in accounts)
    assert first.status == AccountStatus.CONSUMED
    assert [(a.status, a.unknown_attempts) for a in (second, third)] == [
        (AccountStatus.AVAILABLE, 1)
    ] * 2
    assert not ImportAttempt.objects.filter(account__in=[second, third], sent=False).exists()
    assert ReplenishmentRun.objects.get(status=RunStatus.FAILED).returned == 0

    # Their re-send answers "already present": that settles them as consumed, not rejected.
    Account.objects.filter(pk__in=[second.pk, third.pk]).update(retry_after=timezone.now())
    run_now(trigger=RunTrigger.RETRY)
    assert states_of(*accounts) == [AccountStatus.CONSUMED] * 3
    assert len(manager.imported) == 3
    assert ImportAttempt.objects.filter(outcome=AttemptOutcome.REJECTED).count() == 0


def test_an_account_whose_token_holds_the_batch_separator_goes_single(manager):
    batch_mode()
    cut = AccountFactory()
    cut.session_token = cut.session_token[:100] + "----" + cut.session_token[104:]
    cut.save()
    others = AccountFactory.create_batch(2)
    event(current_seats=0)  # 3 accounts
    run = run_now()
    assert run.consumed == 3
    batch = next(
        r["body"]["content"] for r in manager.requests if r["body"].get("import_type") == "batch"
    )
    assert cut.email not in batch and all(a.email in batch for a in others)
    single = next(r["body"] for r in manager.requests if r["body"].get("import_type") == "single")
    assert single["session_token"] == cut.session_token  # whole, as stored
