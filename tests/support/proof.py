"""The proof's moving parts: the service as separate OS processes (gunicorn, db_worker,
reconcile), killed and restarted at will, and the invariants checked against the fake manager's
own record. Used by tests/proof/test_storm.py and tests/proof/test_fault_schedules.py; the
processes' command lines are poolsite/processes.py's, as `make run` starts them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection
from django.db import connections as db_connections
from django.db.models import Count
from django.utils import timezone

from accounts.models import Account, AccountStatus, UnusableReason
from accounts.services import account_retry
from poolsite.processes import reconcile_command, spawn, web_command, worker_command
from tests.support.processes import ROOT, free_port, stop, wait_for
from webhooks import services
from webhooks.models import (
    ACTIVE_RUN_STATUSES,
    AttemptOutcome,
    EventStatus,
    ImportAttempt,
    ReplenishmentRun,
    RunStatus,
    WebhookEvent,
)
from webhooks.selectors import run_activity
from webhooks.services import MSG_LEASE_LOST

ARTIFACTS = ROOT / "tests" / "artifacts" / "proof"
WEBHOOK_PATH = "/webhooks/low-stock/"
PUSH_PATH = "/api/runs/push/"


def env_int(name: str, default: int) -> int:
    """A size the long run (`make proof`) turns up; `make test` keeps the default."""
    return int(os.environ.get(name) or default)


class Cluster:
    """gunicorn instances, db_worker processes and optionally a reconcile loop, as in production.

    Every process gets its own session (so a signal reaches its children) and writes to a log
    file rather than a pipe nobody reads, which would stall a chatty process once full.
    """

    def __init__(
        self, *, logs: Path, env: dict[str, str], webs: int, web_workers: int, workers: int
    ):
        self.logs = logs
        self.env = env
        self.web_count, self.web_workers, self.worker_count = webs, web_workers, workers
        self.webs: list[subprocess.Popen] = []
        self.web_urls: list[str] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self.dead: set[str] = set()
        self.others: list[subprocess.Popen] = []
        self.workers_started = 0
        # When true, a killed worker's leases run out in real time (as in production) instead of
        # being moved past at once; the proof shortens leases (REPLENISH_LEASE_*) to afford it.
        self.real_time_leases = False

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        return spawn(args, env=self.env, log=self.logs / f"{name}.log")

    def start(self) -> Cluster:
        self.logs.mkdir(parents=True, exist_ok=True)
        for n in range(self.web_count):
            port = free_port()
            command = web_command(
                bind=f"127.0.0.1:{port}", workers=self.web_workers, graceful_timeout=5
            )
            self.webs.append(self._spawn(f"web{n}", command))
            self.web_urls.append(f"http://127.0.0.1:{port}")
        for _ in range(self.worker_count):
            self.start_worker()
        for url in self.web_urls:
            wait_for(lambda url=url: _answers(url), timeout=60, what=f"gunicorn at {url}")
        return self

    def start_worker(self) -> str:
        self.workers_started += 1
        worker_id = f"proof-worker-{os.getpid()}-{self.workers_started}"
        self.workers[worker_id] = self._spawn(
            worker_id, worker_command(interval=0.05, worker_id=worker_id)
        )
        return worker_id

    def start_reconciler(self, every: float) -> None:
        self.others.append(self._spawn("reconcile", reconcile_command(every=every)))

    def worker_of_live_run(self) -> str | None:
        """The live worker carrying out the run in flight, if one is."""
        from django_tasks_db.models import DBTaskResult

        from webhooks.tasks import replenish

        running, _queued = run_activity(now=timezone.now())
        if running is None:
            return None
        for ids, args in DBTaskResult.objects.filter(
            status="RUNNING", task_path=replenish.module_path
        ).values_list("worker_ids", "args_kwargs"):
            if (
                ids
                and ids[-1] in self.workers
                and (args or {}).get("kwargs", {}).get("run_id") == running
            ):
                return ids[-1]
        return None

    def busy_workers(self) -> list[str]:
        """Live workers holding a task right now (django-tasks-db records who claimed what)."""
        from django_tasks_db.models import DBTaskResult

        holders = DBTaskResult.objects.filter(status="RUNNING").values_list("worker_ids", flat=True)
        busy = {ids[-1] for ids in holders if ids}
        return [w for w in self.workers if w in busy]

    def kill_worker(self, worker_id: str) -> str:
        """SIGKILL one worker (no cleanup of any kind runs) and start its replacement."""
        process = self.workers.pop(worker_id)
        stop(process, signal.SIGKILL)
        self.dead.add(worker_id)
        return self.start_worker()

    def stall_worker(self, worker_id: str, *, seconds: float) -> None:
        """SIGSTOP a worker for `seconds`, as a VM pause or a swap storm would, while the world
        moves on: its lease runs out and reconcile recovers its accounts. Then SIGCONT.

        The world moves on in a thread of its own: the frozen worker may hold a lock (SQLite's
        write lock, PostgreSQL row locks), and then reconcile waits for the thaw, as any other
        process would. Waiting for reconcile before thawing would deadlock.
        """
        os.killpg(self.workers[worker_id].pid, signal.SIGSTOP)
        self.dead.add(worker_id)  # for its leases, the rest of the world cannot tell the difference
        failures: list[BaseException] = []

        def world_moves_on() -> None:
            try:
                self.expire_dead_leases()
                services.reconcile(now=timezone.now())
            except BaseException as exc:  # handed to the test's thread below
                failures.append(exc)
            finally:
                db_connections.close_all()

        mover = threading.Thread(target=world_moves_on)
        mover.start()
        try:
            time.sleep(seconds)
        finally:
            self.dead.discard(worker_id)
            os.killpg(self.workers[worker_id].pid, signal.SIGCONT)
            mover.join()
        if failures:
            raise failures[0]

    def expire_dead_leases(self) -> int:
        """Move the clock past the leases of runs that a killed worker held; returns how many.

        Waiting the real lease out (a minute or more) per kill would cost hours over hundreds of
        schedules. Only runs whose task a dead worker claimed, and no live one, are touched, so a
        live worker never loses its lease to this.
        """
        from django_tasks_db.models import DBTaskResult

        from webhooks.tasks import replenish

        if self.real_time_leases:
            return 0
        dead_runs, live_runs = set(), set()
        for ids, args in DBTaskResult.objects.filter(
            status="RUNNING", task_path=replenish.module_path
        ).values_list("worker_ids", "args_kwargs"):
            run_id = (args or {}).get("kwargs", {}).get("run_id")
            (dead_runs if ids and ids[-1] in self.dead else live_runs).add(run_id)
        runs = ReplenishmentRun.objects.filter(
            pk__in=dead_runs - live_runs, status=RunStatus.RUNNING
        )
        leases = list(runs.values_list("lease_id", flat=True))
        if not leases:
            return 0
        past = timezone.now() - timedelta(seconds=1)
        runs.update(lease_expires_at=past)
        Account.objects.filter(status=AccountStatus.RESERVED, lease_id__in=leases).update(
            lease_expires_at=past
        )
        return len(leases)

    def check_alive(self) -> list[str]:
        """Processes that died without being killed by the proof: each one is a finding."""
        problems = []
        named = [
            *((f"web {u}", p) for u, p in zip(self.web_urls, self.webs)),
            *self.workers.items(),
            *(("reconciler", p) for p in self.others),
        ]
        for name, process in named:
            if process.poll() is not None:
                problems.append(f"{name} exited on its own with code {process.returncode}")
        return problems

    def stop(self) -> None:
        for process in [*self.others, *self.workers.values(), *self.webs]:
            stop(process)


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/admin/login/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def staff_token() -> str:
    from django.contrib.auth import get_user_model

    from apitokens.services import api_token_create

    user = get_user_model().objects.create_superuser("proof", password="proof-not-a-secret")
    return api_token_create(user=user)[1]


# --- Driving to a quiet state ----------------------------------------------------------------


def unsettled() -> list[str]:
    """What still moves or waits: empty once the service is quiet and every outcome is known."""
    waiting = []
    if n := ReplenishmentRun.objects.filter(status__in=ACTIVE_RUN_STATUSES).count():
        waiting.append(f"{n} run(s) queued or running")
    if n := WebhookEvent.objects.filter(status=EventStatus.QUEUED).count():
        waiting.append(f"{n} event(s) waiting")
    if n := Account.objects.filter(status=AccountStatus.RESERVED).count():
        waiting.append(f"{n} account(s) reserved")
    if n := Account.objects.filter(status=AccountStatus.AVAILABLE, unknown_attempts__gt=0).count():
        waiting.append(f"{n} account(s) waiting on an unknown outcome")
    return waiting


def play_out(cluster: Cluster, *, timeout: float) -> None:
    """Let the work started so far run (under whatever faults are scripted) until no run is
    queued or live, or for `timeout` seconds. A killed worker's run stops counting as live."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.expire_dead_leases()
        running, queued = run_activity(now=timezone.now())
        if running is None and not queued:
            return
        time.sleep(0.02)


def settle(cluster: Cluster, fake, *, timeout: float) -> float:
    """The quiet period: the manager answers normally, reconcile runs, staff retry what is held.

    Returns the seconds it took; raises AssertionError naming what never settled.
    """
    fake.plan([])
    fake.default = "ok"
    started = time.monotonic()
    deadline = started + timeout
    while True:
        cluster.expire_dead_leases()
        services.reconcile(now=timezone.now())
        held = Account.objects.filter(
            status=AccountStatus.AVAILABLE,
            usable=False,
            unusable_reason=UnusableReason.UNKNOWN_OUTCOMES,
        ).values_list("pk", flat=True)
        if held:
            account_retry(account_ids=list(held), by=None)  # what staff do with held accounts
        waiting = unsettled()
        if busy := cluster.busy_workers():
            # A run abandoned while its worker was frozen is not "active", but its worker may
            # still be finishing: quiet means no worker holds a task.
            waiting.append(f"{len(busy)} worker(s) still holding a task")
        if not waiting:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"not quiet after {timeout:g} s: {', '.join(waiting)}")
        time.sleep(0.05)


# --- The invariants --------------------------------------------------------------------------


def identity(email: str | None, account_id: str | None) -> str:
    """How the manager tells accounts apart: the account ID if given, else the email (lower case)."""
    return (account_id or email or "").strip().lower()


def violations(fake, *, hour_cap: int | None = None) -> list[str]:
    """Every way the pool and the manager's own record disagree; empty when they agree exactly.

    Accounts are told apart as the manager does (the account ID, else the email), so two pool
    accounts with one email are two accounts here too.
    - each account the manager holds is `consumed` in the pool, and each `consumed` account is
      held by the manager (which accepts an account once by construction);
    - every re-send of an account follows an outcome the pool could not know or a configuration
      error (an unknown or config_error attempt row): never sent twice otherwise;
    - no import call named an account after the pool had recorded it consumed, but for the one
      send of a worker frozen between its lease check and the send (its answer then finds the
      lease lost: docs/RELIABILITY.md, known limits);
    - every call the manager received has an attempt row (the record is complete), and no
      attempt is recorded as answered unless a call reached the manager;
    - every run's demand is met or recorded as unmet with a reason;
    - nothing is reserved, nothing waits, no account is in a state outside the five;
    - with `hour_cap`: accounts sent for the first time ≤ the cap plus what staff pushed.
    """
    found = []
    held = set(fake.imported)
    pool = {
        identity(email, account_id): (status, consumed_at)
        for email, account_id, status, consumed_at in Account.objects.values_list(
            "email", "account_id", "status", "consumed_at"
        )
    }
    consumed = {key for key, (status, _) in pool.items() if status == AccountStatus.CONSUMED}
    for key in sorted(held - consumed):
        found.append(f"the manager holds {key}, the pool has it {pool.get(key, ('missing',))[0]}")
    for key in sorted(consumed - held):
        found.append(f"the pool has {key} consumed, the manager never accepted it")
    found += [f"{w} after the quiet period" for w in unsettled()]
    states = set(Account.objects.values_list("status", flat=True).distinct())
    found += [f"unknown state {s!r}" for s in states - set(AccountStatus.values)]

    calls = fake.import_calls()
    recorded = _attempts_by_identity()
    named: Counter = Counter()
    late: Counter = Counter()
    for call in calls:
        for key in call["identities"]:
            named[key] += 1
            status, consumed_at = pool.get(key, (None, None))
            if consumed_at is not None and call["time"] > consumed_at.timestamp():
                late[key] += 1
    for key, n in sorted(late.items()):
        # The one send the pool cannot prevent (docs/RELIABILITY.md, known limits): a worker frozen
        # between its lease check and the send itself. Its answer then comes back to a lost lease.
        if n > recorded[key]["lease lost"]:
            found.append(f"{key} was sent {n} time(s) after the pool recorded it consumed")
    for key, n in sorted(named.items()):
        if n > recorded[key]["all"]:
            found.append(
                f"{key}: the manager saw {n} calls, the pool recorded {recorded[key]['all']} attempts"
            )
        # The fake accepts an account once by construction, so "imported twice" shows as calls:
        # each call after the first must be explained by an earlier answer the pool could not use.
        if n - 1 > recorded[key]["unknown"] + recorded[key]["config_error"]:
            found.append(
                f"{key} was sent {n} times with only {recorded[key]['unknown']} unknown and "
                f"{recorded[key]['config_error']} configuration-error outcomes to explain it"
            )
    for key, counts in sorted(recorded.items()):
        if counts["answered"] > named[key]:
            found.append(
                f"{key}: {counts['answered']} attempts recorded as sent, the manager saw {named[key]} calls"
            )
    found += unmet_demand()

    if hour_cap is not None:
        pushed = sum(
            ReplenishmentRun.objects.exclude(requested_accounts=None).values_list(
                "requested_accounts", flat=True
            )
        )
        first_sent = ImportAttempt.objects.filter(sent=True).values("account").distinct().count()
        if first_sent > hour_cap + pushed:
            found.append(
                f"{first_sent} accounts sent within the hour, cap {hour_cap} + {pushed} pushed by staff"
            )
    return found


def never_sent_undecryptable(fake) -> list[str]:
    """Accounts held because no configured key opens them: never sent, never an attempt row."""
    held = Account.objects.filter(unusable_reason=UnusableReason.KEY_MISSING)
    found = []
    named = {key for call in fake.import_calls() for key in call["identities"]}
    for pk, email, account_id in held.values_list("pk", "email", "account_id"):
        if identity(email, account_id) in named:
            found.append(f"account #{pk}, sealed with a key the service lacks, reached the manager")
        if ImportAttempt.objects.filter(account_id=pk).exists():
            found.append(f"account #{pk}, sealed with a key the service lacks, has an attempt row")
    return found


def _attempts_by_identity() -> dict[str, Counter]:
    """identity → Counter of its sent attempts: "all", one per outcome, "answered" (rows a run
    wrote for a call it made: they carry the mode), and "lease lost" (answers that came back
    after the run's lease on the account was gone: recorded, not applied)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    rows = ImportAttempt.objects.filter(sent=True).values_list(
        "account__email", "account__account_id", "outcome", "mode", "error"
    )
    for email, account_id, outcome, mode, error in rows:
        counts[identity(email, account_id)].update(
            (
                "all",
                outcome,
                *(["answered"] if mode else []),
                *(["lease lost"] if MSG_LEASE_LOST in error else []),
            )
        )
    return counts


def unmet_demand() -> list[str]:
    """Runs that finished short of their need without saying so.

    What a run delivered: its attempts that ended consumed or unknown (they may have landed),
    not counting answers that came back to a lost lease. Delivered plus the recorded shortfall
    must cover the need.
    """
    delivered: Counter = Counter()
    rows = ImportAttempt.objects.filter(
        outcome__in=[AttemptOutcome.CONSUMED, AttemptOutcome.UNKNOWN]
    ).values_list("run_id", "error")
    for run_id, error in rows:
        if MSG_LEASE_LOST not in error:
            delivered[run_id] += 1
    found = []
    finished = ReplenishmentRun.objects.exclude(status__in=ACTIVE_RUN_STATUSES).exclude(need=None)
    for run_id, need, shortfall, reason in finished.values_list(
        "pk", "need", "shortfall", "shortfall_reason"
    ):
        if delivered[run_id] + shortfall < need:
            found.append(
                f"run #{run_id} needed {need}, delivered {delivered[run_id]}, recorded {shortfall} short ({reason or 'no reason'})"
            )
    return found


# --- Faults the database itself makes ---------------------------------------------------------


class RecordingFault:
    """Make the database refuse to record an import as consumed for a moment, from any process.

    A trigger on the accounts table raises while `proof_fault.until` is in the future, so the
    worker's run fails after the manager has answered and before the answer is recorded: what
    SQLite's busy timeout or a PostgreSQL failover does to a real run.
    """

    TABLE = "proof_fault"

    def install(self) -> None:
        table = Account._meta.db_table
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"CREATE TABLE IF NOT EXISTS {self.TABLE} (until timestamptz)")
                cursor.execute(
                    "CREATE OR REPLACE FUNCTION proof_fail_consumed() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.status = 'consumed' AND EXISTS (SELECT 1 FROM {self.TABLE} WHERE until > clock_timestamp()) "
                    "THEN RAISE EXCEPTION 'proof: injected failure while recording'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
                cursor.execute(f"DROP TRIGGER IF EXISTS proof_fail_consumed ON {table}")
                cursor.execute(
                    f"CREATE TRIGGER proof_fail_consumed BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION proof_fail_consumed()"
                )
            else:
                cursor.execute(f"CREATE TABLE IF NOT EXISTS {self.TABLE} (until REAL)")
                cursor.execute(
                    f"CREATE TRIGGER IF NOT EXISTS proof_fail_consumed BEFORE UPDATE OF status ON {table} "
                    f"WHEN NEW.status = 'consumed' AND EXISTS (SELECT 1 FROM {self.TABLE} WHERE until > julianday('now')) "
                    "BEGIN SELECT RAISE(ABORT, 'proof: injected failure while recording'); END"
                )

    def arm(self, seconds: float) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {self.TABLE}")
            if connection.vendor == "postgresql":
                cursor.execute(
                    f"INSERT INTO {self.TABLE} VALUES (clock_timestamp() + %s * interval '1 second')",
                    [seconds],
                )
            else:
                cursor.execute(
                    f"INSERT INTO {self.TABLE} VALUES (julianday('now') + %s / 86400.0)", [seconds]
                )

    def remove(self) -> None:
        table = Account._meta.db_table
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER IF EXISTS proof_fail_consumed ON {table}")
                cursor.execute("DROP FUNCTION IF EXISTS proof_fail_consumed()")
            else:
                cursor.execute("DROP TRIGGER IF EXISTS proof_fail_consumed")
            cursor.execute(f"DROP TABLE IF EXISTS {self.TABLE}")


# --- Figures ---------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one proof run did, written to tests/artifacts/proof/ for docs/RELIABILITY.md."""

    name: str
    database: str = field(default_factory=lambda: connection.vendor)
    started: str = field(
        default_factory=lambda: datetime.now().astimezone().isoformat(timespec="seconds")
    )
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def manager_figures(self, fake) -> None:
        calls = fake.import_calls()
        self.counts["manager import calls"] = len(calls)
        self.counts["accounts the manager accepted"] = len(fake.accept_counts)
        behaviours: dict[str, int] = {}
        for call in calls:
            name = (call["behaviour"] or "?").split(":")[0]
            behaviours[name] = behaviours.get(name, 0) + 1
        self.counts.update({f"answers: {name}": n for name, n in sorted(behaviours.items())})
        self.counts["pool accounts"] = Account.objects.count()
        for status, n in (
            Account.objects.values_list("status").order_by("status").annotate(n=Count("id"))
        ):
            self.counts[f"pool {status}"] = n

    def write(self) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{self.database}.json"
        payload = {
            **self.__dict__,
            "seconds": round(self.seconds, 1),
            "python": sys.version.split()[0],
        }
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        return path


def post_webhook(
    session: requests.Session, url: str, *, current_seats: int, threshold: int = 10
) -> int:
    body = {
        "event": "low_stock",
        "current_seats": current_seats,
        "threshold": threshold,
        "message": "库存不足预警",
    }
    headers = {"X-API-Key": settings.MANAGER_API_KEY}
    return session.post(url + WEBHOOK_PATH, json=body, headers=headers, timeout=30).status_code


def post_push(session: requests.Session, url: str, *, token: str, accounts: int) -> int:
    """A staff push through the API; a 409 (a run was starting that moment) is tried again."""
    for _ in range(20):
        status = session.post(
            url + PUSH_PATH,
            json={"accounts": accounts},
            headers={"Authorization": f"Token {token}"},
            timeout=30,
        ).status_code
        if status != 409:
            return status
        time.sleep(0.05)
    return 409


__all__ = [
    "Cluster",
    "Figures",
    "RecordingFault",
    "identity",
    "never_sent_undecryptable",
    "unmet_demand",
    "play_out",
    "env_int",
    "post_push",
    "post_webhook",
    "settle",
    "staff_token",
    "unsettled",
    "violations",
]
