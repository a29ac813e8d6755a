"""Loading through the service and the `load_accounts` command, on the real database."""

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection
from django.utils import timezone

from accounts.models import Account, AccountBatch, AccountStatus, BatchStatus
from accounts.services import (
    MSG_STRICT_ABORTED,
    LineOutcome,
    LoadAborted,
    _insert_chunk,
    _Inserter,
    _pending,
    account_load,
)
from devtools import fakes
from tests.factories import AccountBatchFactory, AccountFactory
from tests.support.commands import run_command

pytestmark = pytest.mark.django_db


def test_every_format_loads_and_the_tokens_come_back_intact(material, write_file):
    accounts = [material() for _ in range(5)]
    formats = [
        "positional",
        "delimited-dash",
        "delimited-pipe",
        "delimited-tab",
        "delimited-spaces",
    ]
    text = "\n".join(fakes.render_line(a, f) for a, f in zip(accounts, formats)) + "\n"

    status, out, _ = run_command(write_file(text))

    assert status == 0, out
    assert "5 created, 0 duplicate, 0 invalid" in out
    for given in accounts:
        stored = Account.objects.get(email=given["email"])
        assert stored.status == AccountStatus.AVAILABLE
        assert (
            stored.access_token,
            stored.session_token,
            stored.refresh_token,
            stored.client_id,
        ) == (
            given["access_token"],
            given["session_token"],
            given["refresh_token"],
            given["client_id"],
        )
        assert stored.usable and stored.at_email == given["email"] and stored.at_expires_at
    batch = AccountBatch.objects.get()
    assert (batch.status, batch.created_count, batch.content) == (BatchStatus.LOADED, 5, None)


def test_csv_with_a_header_row(material, write_file):
    accounts = [material(), material(session_token=None)]
    columns = ["email", "access_token", "refresh_token", "session_token", "client_id", "account_id"]
    status, out, _ = run_command(write_file(fakes.render_csv(accounts, columns), "pool.csv"))
    assert status == 0, out
    assert Account.objects.count() == 2
    assert Account.objects.get(email=accounts[1]["email"]).session_token is None


def test_invalid_and_duplicate_lines_are_reported_with_line_numbers_and_not_saved(
    material, write_file
):
    good, other = material(), material()
    existing = AccountFactory()
    lines = [
        fakes.render_line(good, "positional"),  # 1 created
        "",  # 2 blank, skipped
        "someone@example.com,,,,",  # 3 no token at all
        fakes.render_line(good, "delimited-dash"),  # 4 same account as line 1
        f"{existing.email}----{existing.access_token}",  # 5 already in the pool
        fakes.render_line(other, "delimited-pipe"),  # 6 created
    ]
    status, out, _ = run_command(write_file("\n".join(lines)))

    assert status == 1
    assert "2 created, 2 duplicate, 1 invalid" in out
    assert "line 3: invalid" in out
    assert "line 4: duplicate: duplicate of line 1" in out
    assert f"line 5: duplicate: already in the pool (account #{existing.pk})" in out
    assert Account.objects.count() == 3


def test_dry_run_saves_nothing(material, write_file):
    status, out, _ = run_command(
        write_file(fakes.render_line(material(), "positional")), "--dry-run"
    )
    assert status == 0
    assert "1 would be created" in out
    assert Account.objects.count() == 0 and AccountBatch.objects.count() == 0


def test_strict_is_all_or_nothing(material, write_file):
    lines = [fakes.render_line(material(), "positional") for _ in range(3)] + ["not an account"]
    status, out, err = run_command(write_file("\n".join(lines)), "--strict")
    assert status == 1
    assert str(MSG_STRICT_ABORTED) in err
    assert Account.objects.count() == 0
    assert AccountBatch.objects.get().status == BatchStatus.ABORTED

    status, out, err = run_command(write_file("\n".join(lines[:3])), "--strict")
    assert status == 0 and Account.objects.count() == 3


def test_standard_input(material, tmp_path):
    text = "\n".join(fakes.render_line(material(), "delimited-dash") for _ in range(2))
    status, out, _ = run_command("-", "--batch", "from a pipe", stdin=text, tmp_path=tmp_path)
    assert status == 0 and "2 created" in out
    assert AccountBatch.objects.get().label == "from a pipe"


def test_a_missing_file_is_a_clear_error():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No such file"):
        call_command("load_accounts", "/nonexistent/accounts.txt")


def test_an_expiring_access_token_alone_is_saved_but_flagged_unusable(write_file):
    email = "short@example.com"
    at = fakes.make_access_token(email=email, lifetime=timedelta(hours=5))
    status, out, _ = run_command(write_file(f"{email},{at},,,"))
    assert status == 0
    account = Account.objects.get()
    assert not account.usable and account.unusable_reason
    assert "1 flagged unusable" in out.replace("(", "").replace(")", "")


def test_a_second_load_of_the_same_file_creates_nothing(material, write_file):
    path = write_file("\n".join(fakes.render_line(material(), "positional") for _ in range(4)))
    assert run_command(path)[0] == 0
    status, out, _ = run_command(path)
    assert status == 0 and "0 created, 4 duplicate" in out
    assert Account.objects.count() == 4


def test_lines_spanning_several_chunks(material, monkeypatch):
    monkeypatch.setattr("accounts.services.preparing.LOAD_CHUNK", 3)
    lines = [fakes.render_line(material(), "delimited-dash") for _ in range(8)]
    lines.insert(4, lines[1])  # a duplicate across chunk boundaries
    batch = AccountBatchFactory(status=BatchStatus.LOADING)
    report = account_load(lines=lines, batch=batch)
    assert (report.created, report.duplicates, report.invalid) == (8, 1, 0)
    assert Account.objects.filter(batch=batch).count() == 8


def test_a_watched_load_cuts_its_chunks_by_time_so_progress_keeps_moving(material, monkeypatch):
    """With someone watching (on_chunk), a chunk ends once preparing and writing it would take
    CHUNK_SECONDS, however few lines it has: here every line, with no time allowed."""
    monkeypatch.setattr("accounts.services.loading.CHUNK_SECONDS", 0.0)
    lines = [fakes.render_line(material(), "delimited-dash") for _ in range(5)]
    progress = []
    report = account_load(
        lines=lines,
        batch=AccountBatchFactory(status=BatchStatus.LOADING),
        on_chunk=lambda report: progress.append((report.lines_read, report.created)),
    )
    assert report.created == 5
    assert progress == [(n, n) for n in range(1, 6)]


def test_an_account_inserted_by_a_concurrent_load_is_counted_as_a_duplicate(material):
    """The pool check and the insert are not atomic: the unique constraints settle the race."""
    from accounts.parser import parse_lines

    given = [material() for _ in range(3)]
    parsed = list(
        parse_lines([fakes.render_line(a, "positional") for a in given], now=timezone.now())
    )
    pending = [_pending(p) for p in parsed]
    AccountFactory(**{k: v for k, v in given[1].items() if v is not None})  # the other load won
    batch = AccountBatchFactory(status=BatchStatus.LOADING)
    inserter = _Inserter(batch_id=batch.pk)
    for p in pending:
        p.row = inserter.row(p)
    outcomes = []
    _insert_chunk(inserter, pending, lambda p, o, r="": outcomes.append(o))

    assert sorted(outcomes) == [LineOutcome.CREATED, LineOutcome.CREATED, LineOutcome.DUPLICATE]
    assert Account.objects.filter(batch=batch).count() == 2


def test_strict_abort_raises_with_the_report(material):
    batch = AccountBatchFactory(status=BatchStatus.LOADING)
    with pytest.raises(LoadAborted) as caught:
        account_load(
            lines=[fakes.render_line(material(), "positional"), "garbage"], batch=batch, strict=True
        )
    assert caught.value.report.invalid == 1
    assert Account.objects.count() == 0


def test_pool_status_json(capsys):
    AccountFactory.create_batch(2)
    AccountFactory(status=AccountStatus.RETIRED)
    call_command("pool_status", "--json")
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {
        "available": 2,
        "reserved": 0,
        "consumed": 0,
        "rejected": 0,
        "retired": 1,
    }
    assert data["available_usable"] == 2


def test_the_pick_index_exists():
    with connection.cursor() as cursor:
        names = {
            name
            for constraint in connection.introspection.get_constraints(
                cursor, "accounts_account"
            ).items()
            for name in [constraint[0]]
        }
    assert {"account_pick_idx", "account_status_usable_idx", "account_identity_unique"} <= names


def _load(lines, *, dry_run=False):
    batch = None if dry_run else AccountBatchFactory(status=BatchStatus.LOADING)
    return account_load(lines=lines, batch=batch, dry_run=dry_run, keep_lines=True)


@pytest.mark.parametrize("dry_run", [True, False], ids=["preview", "load"])
@pytest.mark.parametrize("token", ["session_token", "access_token", "refresh_token"])
def test_a_line_repeating_one_pool_token_under_another_email_is_a_duplicate(
    material, token, dry_run
):
    """Each token alone identifies an account: the same token under a new email is the same account.

    The pool account's access token carries no email, so a line that re-uses it under another
    email is not refused for an email mismatch and reaches the duplicate check.
    """
    pool = material(access_token=fakes.make_access_token(email=None))
    assert _load([fakes.render_line(pool, "delimited-dash")]).created == 1
    # Only `token` is shared; everything else on the line is new.
    other = material(access_token=fakes.make_access_token(email=None), account_id=None)
    other[token] = pool[token]

    report = _load([fakes.render_line(other, "delimited-dash")], dry_run=dry_run)

    assert (report.created, report.duplicates, report.invalid) == (0, 1, 0)
    assert [line.outcome for line in report.lines] == [LineOutcome.DUPLICATE]
    assert Account.objects.count() == 1


@pytest.mark.parametrize("account_id", ["0F8FAD5B-D9CB-469F-A165-70867728950E", None])
def test_the_loader_stores_the_lookup_hashes_as_defined(material, settings, account_id):
    """HMAC-SHA-256 under an HKDF-derived key, computed by the test helper on its own."""
    from tests.support.lookup_hashes import account_lookup_hashes

    given = material(email="Mixed.Case@Example.com", account_id=account_id)
    given["access_token"] = fakes.make_access_token(email="mixed.case@example.com")
    assert _load([fakes.render_line(given, "delimited-dash")]).created == 1

    stored = Account.objects.values(
        "identity_hash", "access_token_hash", "session_token_hash", "refresh_token_hash"
    ).get()
    expected = account_lookup_hashes(
        **{
            f: given[f]
            for f in ("email", "account_id", "access_token", "session_token", "refresh_token")
        },
        encryption_keys=settings.POOL_ENCRYPTION_KEY,
    )
    assert stored == expected
    assert all(len(v) == 32 for v in stored.values())


def test_a_repeated_refresh_token_is_found_when_no_line_of_the_chunk_has_a_session_token(material):
    """Each token column is checked even when the lines carry none of an earlier column."""
    pool = material(access_token=fakes.make_access_token(email=None))
    assert _load([fakes.render_line(pool, "delimited-dash")]).created == 1
    other = material(
        access_token=fakes.make_access_token(email=None), session_token=None, account_id=None
    )
    other["refresh_token"] = pool["refresh_token"]

    report = _load([fakes.render_line(other, "delimited-dash")], dry_run=True)

    assert (report.created, report.duplicates) == (0, 1)


def test_an_account_the_pool_gained_after_the_check_is_retried_as_a_duplicate(
    material, monkeypatch
):
    """Another load inserted it between this chunk's check and its insert: the unique constraint
    refuses the insert, the chunk is checked again, and the rest is inserted."""
    from accounts.services import bulk

    given = [material() for _ in range(3)]
    AccountFactory(**{k: v for k, v in given[1].items() if v is not None})
    real_check = bulk.account_existing_digests
    checks = []

    def stale_first_check(**kwargs):
        checks.append(1)
        return {} if len(checks) == 1 else real_check(**kwargs)

    monkeypatch.setattr(bulk, "account_existing_digests", stale_first_check)
    report = _load([fakes.render_line(a, "positional") for a in given])

    assert (report.created, report.duplicates, report.invalid) == (2, 1, 0)
    assert Account.objects.count() == 3 and len(checks) >= 2


def test_an_account_the_pool_gained_after_the_check_twice_is_still_a_duplicate(
    material, monkeypatch
):
    """The retry's check is stale too (a third load raced it): on PostgreSQL the retry inserts
    with ON CONFLICT DO NOTHING, so the constraint skips the line and it is reported a duplicate
    of the right account; on SQLite the chunk is checked and tried once more."""
    from accounts.services import bulk

    given = [material() for _ in range(3)]
    other = AccountFactory(**{k: v for k, v in given[1].items() if v is not None})
    real_check = bulk.account_existing_digests
    checks = []

    def stale_checks_before_each_insert(**kwargs):
        checks.append(1)
        return {} if len(checks) in (1, 3) else real_check(**kwargs)

    monkeypatch.setattr(bulk, "account_existing_digests", stale_checks_before_each_insert)
    report = _load([fakes.render_line(a, "positional") for a in given])

    assert (report.created, report.duplicates, report.invalid, report.failed) == (2, 1, 0, 0)
    duplicate = next(line for line in report.lines if line.outcome == LineOutcome.DUPLICATE)
    assert duplicate.lineno == 2 and f"#{other.pk}" in duplicate.duplicate_reason
    assert Account.objects.count() == 3


def test_an_integrity_error_that_is_not_a_new_duplicate_is_raised_not_retried(
    material, monkeypatch
):
    inserts = []

    def failing_insert(self, rows):
        inserts.append(1)
        if len(inserts) > 3:
            raise RuntimeError("the same failing insert was retried")
        raise IntegrityError("CHECK constraint failed")

    known, new = material(), material()
    AccountFactory(**{k: v for k, v in known.items() if v is not None})
    monkeypatch.setattr(_Inserter, "insert", failing_insert)
    report = _load([fakes.render_line(known, "positional"), fakes.render_line(new, "positional")])
    # Not retried as if it were a new duplicate: the chunk's lines are reported failed, with the reason.
    assert len(inserts) == 1
    assert (report.failed, report.created) == (2, 0)
    assert "CHECK constraint failed" in report.error
