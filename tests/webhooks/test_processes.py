"""The service as separate processes: real workers killed mid-import, a burst through a real web
server, and the whole path `make run` sets up. The fake manager is a real HTTP server on loopback."""

import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone

from accounts.models import Account, AccountStatus
from devtools import fakes
from tests.factories import AccountFactory
from tests.support.manager import MANAGER_KEY
from tests.support.processes import (
    free_port,
    manage,
    project_env,
    start,
    start_worker,
    stop,
    wait_for,
)
from webhooks import services
from webhooks.models import (
    ACTIVE_RUN_STATUSES,
    EventStatus,
    ReplenishmentRun,
    RunStatus,
    WebhookEvent,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BODY = {"event": "low_stock", "current_seats": 5, "threshold": 10, "message": "库存不足预警"}


def imports(manager):
    return [r for r in manager.requests if r["path"] == "/admin/teams/import"]


def quiet():
    """No run queued or running, and no event waiting."""
    return not ReplenishmentRun.objects.filter(status__in=ACTIVE_RUN_STATUSES).exists() and not (
        WebhookEvent.objects.filter(status=EventStatus.QUEUED).exists()
    )


def test_a_worker_killed_mid_import_is_recovered_and_nothing_is_imported_twice(manager, settings):
    accounts = AccountFactory.create_batch(2)
    manager.plan(["landed_then_hang:30"])  # the import lands, the answer never comes
    env = project_env(MANAGER_READ_TIMEOUT="60")
    services.event_receive(
        current_seats=5, threshold=10, message="", payload="{}", remote_addr=None
    )  # needs 2

    worker = start_worker(env)
    try:
        wait_for(lambda: imports(manager), timeout=20, what="the worker's first import")
    finally:
        stop(worker, signal.SIGKILL)
    run = ReplenishmentRun.objects.get()
    assert run.status == RunStatus.RUNNING
    assert [Account.objects.get(pk=a.pk).status for a in accounts] == [AccountStatus.RESERVED] * 2

    # Time passes: the dead run's leases run out. reconcile gives the accounts back and wakes a retry.
    past = timezone.now() - timedelta(seconds=1)
    ReplenishmentRun.objects.filter(pk=run.pk).update(lease_expires_at=past)
    Account.objects.filter(status=AccountStatus.RESERVED).update(lease_expires_at=past)
    call_command("reconcile")
    assert ReplenishmentRun.objects.get(pk=run.pk).status == RunStatus.ABANDONED
    assert [Account.objects.get(pk=a.pk).status for a in accounts] == [AccountStatus.AVAILABLE] * 2

    worker = start_worker(project_env())
    try:
        wait_for(
            lambda: Account.objects.filter(status=AccountStatus.CONSUMED).count() == 2,
            timeout=30,
            what="both accounts consumed",
        )
    finally:
        stop(worker)
    # The one that landed is re-sent once (answered "already present"); the other is sent once.
    assert manager.attempt_counts == {accounts[0].email: 2, accounts[1].email: 1}
    assert len(manager.imported) == 2
    assert not Account.objects.filter(status=AccountStatus.RESERVED).exists()


def _serve(env):
    port = free_port()
    server = start(
        [sys.executable, "scripts/serve.py"],
        {**env, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "2"},
    )
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(f"{url}/admin/login/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=30, what="the web server")
    except AssertionError:
        raise AssertionError(stop(server)) from None
    return server, url


def test_end_to_end_as_make_run_starts_it(manager, tmp_path):
    """Web + worker + reconciler as `make run` starts them; load, webhook burst, import, status."""
    manager.default = "slow:1.5"  # a run lasts seconds, as on a real manager
    env = project_env(MANAGER_READ_TIMEOUT="10")
    lines = [fakes.render_line(fakes.make_account(), "delimited-dash") for _ in range(6)]
    (tmp_path / "pool.txt").write_text("\n".join(lines) + "\n")
    loaded = manage("load_accounts", str(tmp_path / "pool.txt"), env=env)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert "6 created" in loaded.stdout

    server, url = _serve(env)
    try:
        # A burst of concurrent webhooks, as after several redemptions in a row.
        def post(_):
            return requests.post(
                f"{url}/webhooks/low-stock/",
                json=BODY,
                headers={"X-API-Key": MANAGER_KEY},
                timeout=10,
            ).status_code

        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(post, range(30)))
        assert statuses == [202] * 30
        wait_for(
            lambda: len(imports(manager)) >= 2 and quiet(), timeout=60, what="the run to finish"
        )
    finally:
        output = stop(server)
    assert "Serving on" in output

    # Exactly one run's worth (ceil((10 + 5 - 5) / 5) = 2), none twice.
    assert len(manager.imported) == 2 and len(imports(manager)) == 2
    acting = ReplenishmentRun.objects.exclude(reserved=0)
    assert acting.count() == 1 and acting.get().consumed == 2
    events = WebhookEvent.objects.values_list("status", flat=True)
    assert (
        sorted(set(events)) == [EventStatus.ACTED_ON, EventStatus.SUPERSEDED] and len(events) == 30
    )

    status = manage("pool_status", "--json", env=env)
    counts = json.loads(status.stdout)["counts"]
    assert counts == {"available": 4, "reserved": 0, "consumed": 2, "rejected": 0, "retired": 0}
    emails = {r["email"] for r in manager.imported.values()}
    assert emails == set(
        Account.objects.filter(status=AccountStatus.CONSUMED).values_list("email", flat=True)
    )


def _children(pid: int) -> dict[int, str]:
    """pid → command line of each child of `pid` (Linux /proc)."""
    from pathlib import Path

    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            found[int(child)] = cmdline
    return found


def test_make_run_starts_a_dead_worker_again(manager):
    """Found by the fault schedules: a worker whose BEGIN outwaited SQLite's busy timeout exited,
    and `make run` then stopped the whole service. A dead worker is now started again."""
    AccountFactory()
    server, url = _serve(project_env())
    try:
        worker = next(pid for pid, cmd in _children(server.pid).items() if "db_worker" in cmd)
        os.kill(worker, signal.SIGKILL)
        wait_for(
            lambda: [
                pid
                for pid, cmd in _children(server.pid).items()
                if "db_worker" in cmd and pid != worker
            ],
            timeout=20,
            what="a new worker",
        )
        status = requests.post(
            f"{url}/webhooks/low-stock/", json=BODY, headers={"X-API-Key": MANAGER_KEY}, timeout=10
        ).status_code
        assert status == 202
        wait_for(lambda: manager.imported, timeout=30, what="the new worker's import")
        assert server.poll() is None  # still serving
    finally:
        output = stop(server)
    assert "The worker exited with code -9: starting it again." in output


def test_make_run_stops_everything_when_the_web_server_dies():
    """A service that cannot answer webhooks must not look up: serve.py exits 1, workers stopped."""
    server, _url = _serve(project_env())
    children = _children(server.pid)
    web = next(pid for pid, cmd in children.items() if "gunicorn" in cmd)
    os.kill(web, signal.SIGKILL)
    try:
        server.wait(timeout=30)
        stopped = {pid: _state(pid) for pid in children}
    finally:
        # The dead master's own gunicorn workers linger until they notice; they are not the test.
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        output = stop(server)
    assert server.returncode == 1
    assert "The web server exited with code -9: stopping everything." in output
    assert all(state in ("gone", "state:\tz (zombie)\n") for state in stopped.values()), stopped


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(line for line in status if line.startswith("State:")).lower()
    except FileNotFoundError:
        return "gone"


def test_an_event_during_a_run_is_met_exactly_through_make_run(manager):
    """The worked example: A (5 free seats) asks for 2; 1 s later, while A's imports take 2 s each,
    B says 0 free seats. After A's 2 land, B still needs ceil((10 + 5 - (0 + 10)) / 5) = 1.
    The manager must end with exactly 3: 2 would mean B was dropped, 5 that it ignored what landed."""
    AccountFactory.create_batch(6)
    manager.default = "slow:2"
    server, url = _serve(project_env(MANAGER_READ_TIMEOUT="10"))
    try:

        def post(current_seats):
            body = {**BODY, "current_seats": current_seats}
            return requests.post(
                f"{url}/webhooks/low-stock/",
                json=body,
                headers={"X-API-Key": MANAGER_KEY},
                timeout=10,
            )

        assert post(5).status_code == 202
        wait_for(lambda: manager.in_flight, timeout=20, what="A's first import")
        time.sleep(1)
        assert post(0).status_code == 202
        wait_for(
            lambda: len(manager.imported) >= 3 and quiet(),
            timeout=60,
            what="B's follow-up to finish",
        )
        time.sleep(1)  # nothing more may come
    finally:
        stop(server)
    assert len(manager.imported) == 3
    follow_up = ReplenishmentRun.objects.get(trigger="follow_up")
    assert (follow_up.need, follow_up.consumed) == (1, 1)
