"""Proof that secrets stay secret (the promise: "never in logs, history, error pages or exports").

One scenario leaves every kind of record behind (a loaded batch, a pending admin upload, events, a
run with a mix of outcomes, attempts, admin log entries), then looks for the secrets in everything
that could hold or show them: the raw database (the SQLite file and its WAL, or a pg_dump), every
log record, every admin page a crawler reaches, the API's lists and details, and the CSV exports.

A secret counts as found when any 16 consecutive characters of it appear (the search is
tests/support/secrets.py's, which every test uses). Failures name the place and the offset only,
never the secret.
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import logging
import os
import re
import shutil
import subprocess
from collections import deque
from datetime import timedelta
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Account, AccountBatch, BatchSource, BatchStatus
from devtools import fakes
from tests.support.secrets import SLICE, SecretFinder
from webhooks import services
from webhooks.models import ImportAttempt, ReplenishmentRun, RunStatus

MAX_PAGES = 300
SKIP_WORDS = ("logout", "set_language", "delete")


def _body(response) -> str:
    data = b"".join(response.streaming_content) if response.streaming else response.content
    return data.decode("utf-8", errors="replace")


def _database_dump() -> list[tuple[str, str]]:
    """The raw database, as (source, text) pairs: what a backup or a stolen disk would hold."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        connection.close()  # let SQLite finish what it writes; the WAL stays (and is read too)
        name = Path(db["NAME"])
        assert name.is_file(), f"the SQLite test database is not a file: {db['NAME']!r}"
        parts = []
        for suffix in ("", "-wal", "-journal", "-shm"):
            path = Path(f"{name}{suffix}")
            if path.is_file():
                parts.append((f"SQLite file {path.name}", path.read_bytes().decode("latin-1")))
        return parts
    assert connection.vendor == "postgresql", connection.vendor
    env = {**os.environ}
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]
    command = [
        "pg_dump",
        "--no-owner",
        "-h",
        db.get("HOST") or "127.0.0.1",
        "-p",
        str(db.get("PORT") or 5432),
    ]
    command += ["-U", db.get("USER") or "postgres", "-d", db["NAME"]]
    if shutil.which("pg_dump"):
        done = subprocess.run(command, env=env, capture_output=True, timeout=60)
        if done.returncode == 0:
            return [(f"pg_dump of {db['NAME']}", done.stdout.decode("utf-8", errors="replace"))]
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["failed"]
    else:
        why = ["not installed"]
    # No usable pg_dump (a CI image without it, or a client older than the server): every row of
    # every table as text instead, which is the data pg_dump would have written.
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            name = connection.ops.quote_name(table)
            cursor.execute(f"SELECT t::text FROM {name} AS t")
            rows += [f"{table}: {row}" for (row,) in cursor.fetchall()]
    return [(f"every table of {db['NAME']} (pg_dump: {why[0]})", "\n".join(rows))]


def _admin_links(base: str, page: str) -> list[str]:
    links = []
    for href in re.findall(r"""href\s*=\s*["']([^"']*)["']""", page):
        parts = urlsplit(urljoin(base, html.unescape(href)))
        if parts.scheme not in ("", "http") or parts.netloc not in ("", "testserver"):
            continue
        if not parts.path.startswith("/admin/"):
            continue
        url = urlunsplit(("", "", parts.path, parts.query, ""))
        if any(word in url.lower() for word in SKIP_WORDS):
            continue
        links.append(url)
    return links


def _crawl_admin(client, seeds: list[str]) -> dict[str, str]:
    """GET every admin page reachable from the seeds, once each, at most MAX_PAGES.

    Plain paths come first, then filtered lists, and the many sortings of each list last: when
    the bound cuts the walk short, it is a list sorted once more that goes unseen.
    """
    tiers = (deque(), deque(), deque())
    queued: set[str] = set()

    def add(url: str) -> None:
        if url not in queued:
            queued.add(url)
            query = urlsplit(url).query
            tier = 0 if not query else 2 if re.search(r"(^|&)(o|_facets)=", query) else 1
            tiers[tier].append(url)

    for seed in seeds:
        add(seed)
    pages: dict[str, str] = {}
    while any(tiers) and len(pages) < MAX_PAGES:
        url = next(tier for tier in tiers if tier).popleft()
        response = client.get(url)
        assert response.status_code < 500, f"{url} answered {response.status_code}"
        body = _body(response)
        pages[url] = body
        if response.status_code in (301, 302, 303, 307, 308):
            location = urlsplit(urljoin(url, response["Location"]))
            if location.path.startswith("/admin/"):
                target = urlunsplit(("", "", location.path, location.query, ""))
                if not any(word in target.lower() for word in SKIP_WORDS):
                    add(target)
        elif "html" in response.get("Content-Type", ""):
            for link in _admin_links(url, body):
                add(link)
    return pages


@pytest.mark.django_db(transaction=True)
def test_no_secret_anywhere(client, manager, material, settings, caplog, django_user_model, rng):
    settings.DEBUG = False
    caplog.set_level(logging.DEBUG)  # the root logger; apprise and urllib3 stay capped by LOGGING
    # A manager key of a realistic length (the fixture's is exactly one slice long).
    manager.api_key = settings.MANAGER_API_KEY = (
        "mk_" + base64.urlsafe_b64encode(rng.randbytes(30)).decode()
    )
    admin = django_user_model.objects.create_superuser("root", password="pw")

    # 1. The scenario: every kind of record exists afterwards.
    accounts = [material() for _ in range(8)]
    loaded, pending = accounts[:6], accounts[6:]
    batch, report = account_services.account_batch_load(
        lines=[fakes.render_line(a, "delimited-dash") for a in loaded],
        label="proof",
        source=BatchSource.COMMAND,
        user=admin,
        filename="proof.txt",
    )
    assert report.created == len(loaded)
    staged = account_services.account_batch_stage(
        # A duplicate of a loaded account too, so the problem list has a line with secrets in it.
        content="\n".join(fakes.render_line(a, "delimited-dash") for a in [*pending, loaded[0]]),
        label="proof pending",
        filename="spare.txt",
        user=admin,
    )
    account_services.account_batch_process(batch_id=staged.pk)  # the worker's preview

    manager.plan(["ok", "http500", "reject"])
    event = services.event_receive(
        current_seats=0,
        threshold=10,
        message="low stock",
        payload='{"current_seats": 0, "threshold": 10}',
        remote_addr="127.0.0.1",
    )
    run = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)
    run = services.run_execute(run_id=run.pk)
    assert run is not None and len(manager.requests) >= 2, "the run should have called the manager"
    # A follow-up round: the manager's Team-info answers carry the Teams' decrypted tokens.
    from django.core.management import call_command

    from webhooks.models import FollowedTeam

    call_command("follow_up", "--rate", "0", stdout=io.StringIO())
    assert FollowedTeam.objects.exclude(checked_at=None).exists(), (
        "the round should have asked about a Team"
    )
    assert any(t["access_token"] for t in manager.teams().values()), (
        "the fake's answers should carry tokens"
    )

    first_account = Account.objects.get(email=loaded[-1]["email"])
    account_services.account_set_notes(account=first_account, notes="checked by hand", by=admin)
    account_services.account_retire(account_ids=[first_account.pk], by=admin)

    attempt = ImportAttempt.objects.order_by("pk").first()
    assert attempt is not None and ImportAttempt.objects.count() >= 2
    assert AccountBatch.objects.get(pk=staged.pk).status == BatchStatus.PENDING

    # 2. Every secret, from what was generated (not from the database).
    secrets = {}
    for n, account in enumerate(accounts):
        for field in ("access_token", "session_token", "refresh_token"):
            secrets[f"account {n} {field}"] = account[field]
    secrets["MANAGER_API_KEY"] = settings.MANAGER_API_KEY
    for n, key in enumerate(
        k.strip() for k in django_settings.POOL_ENCRYPTION_KEY.split(",") if k.strip()
    ):
        secrets[f"POOL_ENCRYPTION_KEY {n}"] = key
        try:
            raw = base64.b64decode(key, validate=True).decode("latin-1")
        except (binascii.Error, ValueError):
            continue
        secrets[f"POOL_ENCRYPTION_KEY {n} (raw bytes)"] = raw
    finder = SecretFinder(secrets)
    # The search itself must work, or finding nothing below would prove nothing.
    assert finder.find(f"<p>{secrets['MANAGER_API_KEY'][3 : 3 + SLICE]}</p>"), (
        "the search cannot find a planted slice"
    )

    # 3. Everywhere they might show. Pages and exports first, so their log records are searched too.
    client.force_login(admin)
    found: list[str] = []

    def search(source: str, text: str) -> None:
        for offset, name in finder.find(text):
            found.append(f"{name} in {source} at offset {offset}")

    # The admin, as a crawler sees it, with the change page of each kind of record on the way.
    seeds = [
        "/admin/",
        reverse("admin:accounts_account_change", args=[first_account.pk]),
        reverse("admin:accounts_accountbatch_change", args=[batch.pk]),
        reverse("admin:accounts_accountbatch_change", args=[staged.pk]),
        reverse("admin:accounts_account_load_preview", args=[staged.pk]),
        reverse("admin:webhooks_webhookevent_change", args=[event.pk]),
        reverse("admin:webhooks_replenishmentrun_change", args=[run.pk]),
        reverse("admin:webhooks_importattempt_change", args=[attempt.pk]),
        reverse("admin:webhooks_followedteam_change", args=[FollowedTeam.objects.first().pk]),
        reverse("admin:webhooks_batch_report"),
    ]
    pages = _crawl_admin(client, seeds)
    for url, body in pages.items():
        search(f"admin page {url}", body)
    for model in (
        "account",
        "accountbatch",
        "webhookevent",
        "replenishmentrun",
        "importattempt",
        "followedteam",
    ):
        crawled = any(re.search(rf"/admin/\w+/{model}/\d+/change/", url) for url in pages)
        assert crawled, f"no {model} change page crawled"
    assert len(pages) > 20, f"the crawler reached only {len(pages)} admin pages"

    # The API: each list, and the first detail of each.
    for name in ("api-account", "api-event", "api-run", "api-attempt"):
        url = reverse(f"{name}-list")
        response = client.get(url, HTTP_ACCEPT="application/json")
        assert response.status_code == 200, f"{url} answered {response.status_code}"
        search(f"API {url}", _body(response))
        data = response.json()
        rows = data["results"] if isinstance(data, dict) else data
        assert rows, f"{url} lists nothing"
        detail = reverse(f"{name}-detail", args=[rows[0]["id"]])
        response = client.get(detail, HTTP_ACCEPT="application/json")
        assert response.status_code == 200, f"{detail} answered {response.status_code}"
        search(f"API {detail}", _body(response))
    stats = client.get(reverse("api-stats"), HTTP_ACCEPT="application/json")
    assert stats.status_code == 200
    search(f"API {reverse('api-stats')}", _body(stats))

    # The CSV exports: the last 30 days, of attempts and of consumed accounts, and the filtered one.
    today = timezone.localdate()
    period = {"first": (today - timedelta(days=29)).isoformat(), "last": today.isoformat()}
    export_url = reverse("admin:webhooks_importattempt_export")
    for what in ("attempts", "consumed"):
        response = client.get(export_url, {"what": what, **period})
        assert response.status_code == 200 and response.streaming, (
            f"{export_url}?what={what} gave no CSV"
        )
        text = _body(response)
        assert text.count("\n") >= 2, f"the {what} export is empty"
        search(f"CSV export {export_url}?what={what}", text)
    problems_url = reverse("admin:accounts_account_load_problems", args=[staged.pk])
    response = client.get(problems_url)
    assert response.status_code == 200 and _body(response).count("\n") == 2, (
        "the problem list is not there"
    )
    search(f"CSV export {problems_url}", _body(response))
    for url in (
        reverse("admin:accounts_account_load_status", args=[staged.pk]),
        reverse("api-account-batch", kwargs={"batch_id": staged.pk}),
    ):
        response = client.get(url, HTTP_ACCEPT="application/json")
        assert response.status_code == 200, f"{url} answered {response.status_code}"
        search(f"batch status {url}", _body(response))
    filtered_url = reverse("admin:webhooks_importattempt_export_filtered")
    response = client.get(filtered_url)
    assert response.status_code == 200 and response.streaming
    search(f"CSV export {filtered_url}", _body(response))

    # Every log record of the whole scenario, exceptions included.
    assert caplog.records, "nothing was logged: is the root logger capturing?"
    for n, record in enumerate(caplog.records):
        search(f"log record #{n} ({record.name}, {record.levelname})", record.getMessage())
    search("the formatted log", caplog.text)

    # The raw database last: it holds everything the steps above may have written.
    for source, text in _database_dump():
        search(source, text)

    assert not found, "secret material found:\n" + "\n".join(found)
