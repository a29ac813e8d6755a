"""The storm: many processes, a slow and sometimes failing manager, and a burst of webhooks.

On PostgreSQL: 2 gunicorn instances (2 workers each) + 3 db_worker processes + a reconcile
loop, as separate OS processes. On SQLite: 1 gunicorn + 1 db_worker + the reconcile loop. The
fake manager takes 1–2 s an import and now and then fails (500, dropped connection, landed but
no answer, garbage). 500 webhooks come from 25 concurrent clients with varying seat counts,
while staff push accounts through the API. Afterwards the pool and the manager's own record
must agree exactly, nothing may be reserved, the hourly cap must have held, and no process may
have printed a token.

`make test` caps the hour at 20 accounts to keep the run short; `make proof` uses the default 50.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection

from accounts.models import Account
from tests.factories import AccountFactory
from tests.support.processes import project_env
from tests.support.proof import (
    Cluster,
    Figures,
    env_int,
    play_out,
    post_push,
    post_webhook,
    settle,
    staff_token,
    violations,
)
from tests.support.secrets import SecretFinder
from webhooks.models import EventStatus, ReplenishmentRun, WebhookEvent
from webhooks.selectors import policy_get

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WEBHOOKS = env_int("PROOF_WEBHOOKS", 500)
CLIENTS = 25
HOUR_CAP = env_int("PROOF_HOUR_CAP", 20)
PUSHES = 3
PUSH_SIZE = 2
TOKEN_FIELDS = ("access_token", "session_token", "refresh_token")
# Webhooks spread over about this long: longer than importing a full hour's cap at 1.5 s an
# account, so the cap is reached while webhooks still arrive.
STORM_SECONDS = max(20, HOUR_CAP * 2.5)


def manager_answers(rng: random.Random, n: int) -> list[str]:
    """Slow (1–2 s) three times in four, failing otherwise."""
    plan = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.08:
            plan.append("http500")
        elif roll < 0.14:
            plan.append("drop")
        elif roll < 0.20:
            plan.append("landed_then_hang:2.5")
        elif roll < 0.25:
            plan.append("garbage")
        else:
            plan.append(f"slow:{rng.uniform(1.0, 2.0):.2f}")
    return plan


def test_a_storm_of_webhooks_over_many_processes_leaves_pool_and_manager_in_agreement(
    manager, tmp_path
):
    rng = random.Random(20261125)
    postgres = connection.vendor == "postgresql"
    policy = policy_get()
    policy.max_accounts_per_hour = HOUR_CAP
    policy.retry_backoff = "1,1,2"
    policy.save()
    AccountFactory.create_batch(HOUR_CAP + PUSHES * PUSH_SIZE + 30)
    manager.plan(manager_answers(rng, 400))
    manager.default = "slow:1"
    env = project_env(MANAGER_READ_TIMEOUT="3", MANAGER_CONNECT_TIMEOUT="1")
    cluster = Cluster(
        logs=tmp_path / "logs",
        env=env,
        webs=2 if postgres else 1,
        web_workers=2,
        workers=3 if postgres else 1,
    )
    figures = Figures("storm")
    token = staff_token()
    try:
        cluster.start()
        cluster.start_reconciler(every=1)
        started = time.monotonic()
        statuses: Counter = Counter()
        latencies: list[float] = []
        lock = threading.Lock()
        per_client = [
            WEBHOOKS // CLIENTS + (1 if i < WEBHOOKS % CLIENTS else 0) for i in range(CLIENTS)
        ]
        seeds = [rng.random() for _ in range(CLIENTS + 1)]

        def client(index: int) -> None:
            own = random.Random(seeds[index])
            session = requests.Session()
            for n in range(per_client[index]):
                time.sleep(own.uniform(0, 2 * STORM_SECONDS / max(per_client[index], 1)))
                url = cluster.web_urls[(index + n) % len(cluster.web_urls)]
                sent = time.perf_counter()
                threshold = own.randint(5, 40)  # asks for 1 to 9 accounts
                status = post_webhook(
                    session, url, current_seats=own.randint(0, threshold), threshold=threshold
                )
                with lock:
                    latencies.append(time.perf_counter() - sent)
                    statuses[f"webhook {status}"] += 1

        def staff() -> None:
            own = random.Random(seeds[-1])
            session = requests.Session()
            for _ in range(PUSHES):
                time.sleep(own.uniform(0, STORM_SECONDS / PUSHES))
                status = post_push(session, cluster.web_urls[-1], token=token, accounts=PUSH_SIZE)
                with lock:
                    statuses[f"push {status}"] += 1

        with ThreadPoolExecutor(CLIENTS + 1) as pool:
            for future in [pool.submit(client, i) for i in range(CLIENTS)] + [pool.submit(staff)]:
                future.result()
        storm_seconds = time.monotonic() - started
        play_out(cluster, timeout=300)
        quiet_seconds = settle(cluster, manager, timeout=120)
        found = violations(manager, hour_cap=HOUR_CAP) + cluster.check_alive()
    finally:
        cluster.stop()

    expected = {"webhook 202": WEBHOOKS, "push 202": PUSHES}
    if dict(statuses) != expected:
        found.append(f"answers {dict(statuses)}, expected {expected}")
    # What every process of the storm printed holds no slice of any token.
    finder = SecretFinder(
        {
            f"{field} of #{a.pk}": getattr(a, field)
            for a in Account.objects.all()
            for field in TOKEN_FIELDS
            if getattr(a, field)
        }
    )
    for log in sorted((tmp_path / "logs").glob("*.log")):
        found += [
            f"a token ({name}) in {log.name} at offset {at}"
            for at, name in finder.find(log.read_text(errors="replace"))
        ]
    cap_spent = ReplenishmentRun.objects.filter(
        need_explained__contains="in the last hour → 0"
    ).count()
    if not cap_spent:
        found.append("the hourly cap was never reached: the storm did not test it")
    events = Counter(WebhookEvent.objects.values_list("status", flat=True))
    if sum(events.values()) != WEBHOOKS or set(events) - {
        EventStatus.ACTED_ON,
        EventStatus.SUPERSEDED,
    }:
        found.append(f"events recorded {dict(events)}")

    latencies.sort()
    figures.counts.update(
        {
            "web processes": len(cluster.web_urls),
            "db_worker processes": cluster.worker_count,
            "concurrent clients": CLIENTS,
            "webhooks": WEBHOOKS,
            "staff pushes": PUSHES,
            "hourly cap": HOUR_CAP,
            "webhook p50 ms": round(statistics.median(latencies) * 1000),
            "webhook p99 ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000),
            "storm seconds": round(storm_seconds),
            "seconds to finish and settle": round(time.monotonic() - started - storm_seconds),
            "quiet period seconds": round(quiet_seconds),
            **{f"events {status}": n for status, n in sorted(events.items())},
            "runs the hourly cap left with nothing to do": cap_spent,
            **{
                f"runs {status}": n
                for status, n in Counter(
                    ReplenishmentRun.objects.values_list("status", flat=True)
                ).items()
            },
        }
    )
    figures.manager_figures(manager)
    figures.seconds = time.monotonic() - started
    figures.violations = found
    figures.write()
    assert not found, found
