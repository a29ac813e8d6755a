"""Loads in the background worker: progress, a worker killed mid-load, reconcile, running again,
cancelling, a chunk the database refuses. The first tests run the worker's service function here
(the `worker` fixture); the last ones start real `manage.py db_worker` processes."""

import json
import multiprocessing
import signal
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import DataError
from django.urls import reverse
from django.utils import timezone

from accounts import services
from accounts.models import Account, AccountBatch, BatchProblemChunk, BatchSource, BatchStatus
from devtools import fakes
from tests.support.commands import run_command
from tests.support.processes import project_env, start_worker, stop, wait_for

pytestmark = pytest.mark.django_db

BULK_URL = reverse("api-account-bulk")
LOAD_URL = reverse("admin:accounts_account_load")


def lines_of(n, material):
    return [fakes.render_line(material(), "delimited-dash") for _ in range(n)]


def stage(lines, *, confirmed=True, **kwargs):
    # Uploaded by someone reading English: the worker writes the batch's texts in that language
    # (a batch without one gets LANGUAGE_CODE's, 简体中文).
    kwargs.setdefault("language", "en")
    return services.account_batch_stage(
        content="\n".join(lines),
        label="test",
        source=BatchSource.API,
        confirmed=confirmed,
        **kwargs,
    )


class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing after it runs, not even except Exception."""


def test_the_bulk_api_never_forks_in_the_web_process(admin_client, material, monkeypatch, worker):
    """A web request used to fork the loader's helper process (it was left blocked when gunicorn
    killed the worker)."""

    def no_fork(*args, **kwargs):
        raise AssertionError("forked")

    monkeypatch.setattr(multiprocessing, "get_context", no_fork)
    text = "\n".join(lines_of(3, material))
    response = admin_client.post(
        BULK_URL, json.dumps({"text": text}), content_type="application/json"
    )
    assert response.status_code == 202
    worker()  # the worker does not fork either
    assert AccountBatch.objects.get().status == BatchStatus.LOADED and Account.objects.count() == 3


def test_a_killed_load_is_failed_by_reconcile_and_running_it_again_is_harmless(
    material, monkeypatch, worker
):
    monkeypatch.setattr("accounts.services.preparing.LOAD_CHUNK", 2)
    batch = stage(lines_of(6, material))
    original = services._BatchRecorder.chunk
    calls = []

    def dies_after_the_first_chunk(self, report):
        original(self, report)
        calls.append(report.created)
        if len(calls) == 1:
            raise Killed

    monkeypatch.setattr(services._BatchRecorder, "chunk", dies_after_the_first_chunk)
    with pytest.raises(Killed):
        worker()
    batch.refresh_from_db()
    assert (batch.status, batch.created_count, batch.lines_read) == (BatchStatus.LOADING, 2, 2)
    assert batch.worker_token is not None and batch.content is not None

    call_command("reconcile")  # the heartbeat is fresh: a slow worker, not a dead one
    batch.refresh_from_db()
    assert batch.status == BatchStatus.LOADING

    AccountBatch.objects.filter(pk=batch.pk).update(
        progress_at=timezone.now() - timedelta(minutes=3)
    )
    call_command("reconcile")
    batch.refresh_from_db()
    assert batch.status == BatchStatus.FAILED and batch.worker_token is None
    assert str(services.MSG_BATCH_ABANDONED) == batch.error and batch.content is not None

    services.account_batch_retry(batch_id=batch.pk)
    worker()
    batch.refresh_from_db()
    assert (batch.status, batch.created_count, batch.duplicate_count, batch.content) == (
        BatchStatus.LOADED,
        6,
        0,
        None,
    )
    assert Account.objects.filter(batch=batch).count() == 6


def test_reconcile_fails_a_batch_no_worker_took_for_an_hour(material):
    batch = stage(lines_of(1, material))
    now = timezone.now()
    assert services.account_batch_fail_abandoned(now=now + timedelta(minutes=30)) == 0
    assert services.account_batch_fail_abandoned(now=now + timedelta(minutes=61)) == 1
    batch.refresh_from_db()
    assert (batch.status, batch.error) == (BatchStatus.FAILED, str(services.MSG_BATCH_NOT_TAKEN))


def test_cancelling_a_failed_batch_deletes_its_text_and_problem_list(material, worker):
    batch = stage(lines_of(1, material) + ["nonsense"], confirmed=False)
    worker()
    assert BatchProblemChunk.objects.filter(batch=batch).exists()
    AccountBatch.objects.filter(pk=batch.pk).update(status=BatchStatus.FAILED)
    services.account_batch_cancel(batch_id=batch.pk)
    batch.refresh_from_db()
    assert (batch.status, batch.content) == (BatchStatus.CANCELLED, None)
    assert not BatchProblemChunk.objects.filter(batch=batch).exists()
    with pytest.raises(services.BatchNotPending):
        services.account_batch_retry(batch_id=batch.pk)


def test_a_batch_being_saved_cannot_be_cancelled(material):
    batch = stage(lines_of(1, material))
    with pytest.raises(services.BatchNotPending):
        services.account_batch_cancel(batch_id=batch.pk)


def test_a_chunk_the_database_refuses_fails_the_batch_and_loses_no_other_chunk(
    material, monkeypatch, worker
):
    monkeypatch.setattr("accounts.services.preparing.LOAD_CHUNK", 2)
    batch = stage(lines_of(6, material))
    original = services._Inserter.insert
    calls = []

    def refuses_the_second_chunk(self, rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise DataError(
                "value too long for type character varying(254)\nCONTEXT: eyJhbGciOiJIUzI1NiJ9.secret"
            )
        original(self, rows)

    monkeypatch.setattr(services._Inserter, "insert", refuses_the_second_chunk)
    worker()
    batch.refresh_from_db()
    assert (batch.status, batch.created_count, batch.failed_count) == (BatchStatus.FAILED, 4, 2)
    assert "lines 3 to 4" in batch.error and "value too long" in batch.error
    assert "eyJhbGciOiJIUzI1NiJ9" not in batch.error and batch.content is not None
    assert [r["outcome"] for r in batch.detail["rows"] if r["outcome"] != "created"] == [
        "failed",
        "failed",
    ]

    services.account_batch_retry(batch_id=batch.pk)  # the database accepts them now
    worker()
    batch.refresh_from_db()
    assert (batch.status, batch.created_count, batch.duplicate_count) == (BatchStatus.LOADED, 6, 0)


def test_the_command_reports_a_refused_chunk_and_exits_1(material, monkeypatch, write_file):
    monkeypatch.setattr("accounts.services.preparing.LOAD_CHUNK", 2)
    original = services._Inserter.insert
    calls = []

    def refuses_the_first_chunk(self, rows):
        calls.append(1)
        if len(calls) == 1:
            raise DataError("value too long")
        original(self, rows)

    monkeypatch.setattr(services._Inserter, "insert", refuses_the_first_chunk)
    status, out, err = run_command(write_file("\n".join(lines_of(4, material))))
    assert status == 1 and "2 not saved" in err and "2 created" in out
    assert AccountBatch.objects.get().status == BatchStatus.FAILED


# --- Real worker processes ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_reads_the_upload_then_saves_it_after_confirmation(admin_client, material):
    admin_client.post(LOAD_URL, {"text": "\n".join(lines_of(5, material) + ["nonsense"])})
    batch = AccountBatch.objects.get()
    page = reverse("admin:accounts_account_load_preview", args=[batch.pk])
    status = reverse("admin:accounts_account_load_status", args=[batch.pk])
    worker = start_worker(project_env())
    try:
        wait_for(
            lambda: admin_client.get(status).json()["status"] == "pending",
            timeout=30,
            what="the preview",
        )
        state = admin_client.get(status).json()
        assert (state["created"], state["invalid"], state["lines_read"]) == (5, 1, 6)
        assert Account.objects.count() == 0
        admin_client.post(page, {"confirm": "1"})
        wait_for(
            lambda: admin_client.get(status).json()["status"] == "loaded",
            timeout=30,
            what="the load",
        )
    finally:
        stop(worker)
    assert Account.objects.filter(batch=batch).count() == 5
    batch.refresh_from_db()
    assert batch.content is None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_killed_mid_load_leaves_a_batch_reconcile_fails_and_a_rerun_completes():
    # Lines with an access token only: quick to make, slow enough to load that the kill lands.
    lines = [
        fakes.make_access_token(email=f"kill{n}@example.com", lifetime=timedelta(days=5))
        for n in range(30000)
    ]
    batch = stage(lines)
    worker = start_worker(project_env())
    try:
        wait_for(
            lambda: AccountBatch.objects.filter(
                pk=batch.pk, status=BatchStatus.LOADING, lines_read__gt=0
            ).exists(),
            timeout=60,
            interval=0.02,
            what="the worker's first chunk",
        )
    finally:
        stop(worker, signal.SIGKILL)
    batch.refresh_from_db()
    assert batch.status == BatchStatus.LOADING, "the worker finished before it was killed"
    saved = Account.objects.filter(batch=batch).count()
    assert 0 < saved < 30000

    AccountBatch.objects.filter(pk=batch.pk).update(
        progress_at=timezone.now() - timedelta(minutes=3)
    )
    call_command("reconcile")
    batch.refresh_from_db()
    assert batch.status == BatchStatus.FAILED

    services.account_batch_retry(batch_id=batch.pk)
    worker = start_worker(project_env())
    try:
        wait_for(
            lambda: AccountBatch.objects.filter(pk=batch.pk, status=BatchStatus.LOADED).exists(),
            timeout=120,
            what="the load run again",
        )
    finally:
        stop(worker)
    batch.refresh_from_db()
    assert (batch.created_count, batch.duplicate_count, batch.invalid_count) == (30000, 0, 0)
    assert Account.objects.filter(batch=batch).count() == 30000


def test_a_batch_cancelled_while_the_worker_reads_it_stops_the_worker_and_keeps_nothing(
    material, monkeypatch, worker
):
    monkeypatch.setattr("accounts.services.preparing.LOAD_CHUNK", 1)
    # Store a problem piece every chunk.
    monkeypatch.setattr("accounts.services.batch_work.PROBLEM_CHUNK_CHARS", 1)
    batch = stage(["nonsense"] * 8 + lines_of(8, material), confirmed=False)
    original = services._BatchRecorder.chunk
    calls = []

    def cancelled_after_one_chunk(self, report):
        calls.append(1)
        if len(calls) == 2:
            services.account_batch_cancel(batch_id=batch.pk)
        original(self, report)

    monkeypatch.setattr(services._BatchRecorder, "chunk", cancelled_after_one_chunk)
    worker()
    batch.refresh_from_db()
    assert (batch.status, batch.content) == (BatchStatus.CANCELLED, None)
    assert len(calls) == 2  # it stopped at the first chunk after the cancel
    assert not BatchProblemChunk.objects.filter(batch=batch).exists()
