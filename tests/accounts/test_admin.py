"""The pool's admin, through the test client: load page, preview, confirm, list, masking."""

import csv
import io
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts import forms as load_forms
from accounts.models import Account, AccountBatch, AccountStatus, BatchStatus, UnusableReason
from accounts.services import MSG_BATCH_NOT_PENDING
from devtools import fakes
from tests.factories import AccountFactory
from tests.support.secrets import assert_no_secret
from tests.support.users import staff_with

pytestmark = pytest.mark.django_db

LOAD_URL = reverse("admin:accounts_account_load")
LIST_URL = reverse("admin:accounts_account_changelist")


def preview_url(batch):
    return reverse("admin:accounts_account_load_preview", args=[batch.pk])


def test_upload_preview_confirm(admin_client, material, worker):
    good, bad_email = material(), material()
    existing = AccountFactory()
    text = "\n".join(
        [
            fakes.render_line(good, "positional"),
            f"other@example.com----{bad_email['access_token']}",  # email disagrees with the AT
            f"{existing.email}----{existing.access_token}",
        ]
    )
    upload = SimpleUploadedFile("spare.txt", text.encode())

    response = admin_client.post(LOAD_URL, {"file": upload, "label": "november"})
    batch = AccountBatch.objects.get(label="november")
    assert response.status_code == 302 and response.url == preview_url(batch)
    assert (
        batch.status == BatchStatus.PREVIEWING and batch.total_lines == 3
    )  # read by the worker, not here
    reading = admin_client.get(response.url).content.decode()
    assert 'id="load-progress"' in reading and 'name="confirm" value="Save" disabled' in reading

    worker()
    preview = admin_client.get(response.url)
    html = preview.content.decode()
    assert preview.status_code == 200
    assert Account.objects.count() == 1  # nothing saved by the preview
    rows = {
        int(n): cls for cls, n in re.findall(r'<tr class="outcome-(\w+)" data-line="(\d+)"', html)
    }
    assert rows == {1: "created", 2: "invalid", 3: "duplicate"}
    assert good["email"] in html and shown_masked(good["session_token"]) in html
    assert_no_secret(html, good["access_token"], good["session_token"], good["refresh_token"])
    assert_no_secret(html, bad_email["access_token"], existing.access_token)

    confirmed = admin_client.post(preview_url(batch), {"confirm": "1"})
    assert confirmed.status_code == 302 and Account.objects.count() == 1  # the worker saves it
    worker()
    done = admin_client.get(preview_url(batch))
    assert Account.objects.count() == 2
    stored = Account.objects.get(email=good["email"])
    assert stored.batch == batch and stored.session_token == good["session_token"]
    batch.refresh_from_db()
    assert (batch.status, batch.created_count, batch.duplicate_count, batch.invalid_count) == (
        BatchStatus.LOADED,
        1,
        1,
        1,
    )
    assert batch.content is None and batch.loaded_by.username == "admin"
    assert_no_secret(done.content.decode(), good["access_token"], good["session_token"])


def shown_masked(secret):
    """How every page shows a token: an ellipsis and its last 4 characters (written out here,
    not the product's mask(), so a page that shows more or fewer characters fails)."""
    return "…" + secret[-4:]


def test_pasted_text_and_a_second_confirm_loads_once(admin_client, material, worker):
    response = admin_client.post(
        LOAD_URL, {"text": fakes.render_line(material(), "delimited-dash")}
    )
    batch = AccountBatch.objects.get()
    worker()
    assert admin_client.post(preview_url(batch), {"confirm": "1"}).status_code == 302
    again = admin_client.post(preview_url(batch), {"confirm": "1"}, follow=True)
    worker()
    assert str(MSG_BATCH_NOT_PENDING) in again.content.decode()
    assert Account.objects.count() == 1
    assert response.status_code == 302


def test_cancel_drops_the_upload(admin_client, material, worker):
    admin_client.post(LOAD_URL, {"text": fakes.render_line(material(), "positional")})
    batch = AccountBatch.objects.get()
    worker()
    admin_client.post(preview_url(batch), {"cancel": "1"})
    batch.refresh_from_db()
    assert (batch.status, batch.content) == (BatchStatus.CANCELLED, None)
    assert Account.objects.count() == 0


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, load_forms.MSG_NOTHING_GIVEN),
        ({"text": "   \n  "}, load_forms.MSG_NOTHING_GIVEN),
        ({"file": ("a.txt", b"\x00\x01binary")}, load_forms.MSG_NOT_TEXT),
        ({"file": ("a.txt", b"\xff\xfe\xfa not utf8")}, load_forms.MSG_NOT_UTF8),
        ({"file": ("a.exe", b"a@x.com")}, load_forms.MSG_BAD_EXTENSION),
        ({"file": ("a.txt", b"x"), "text": "y"}, load_forms.MSG_BOTH_GIVEN),
    ],
)
def test_bad_uploads_get_a_clear_error_and_change_nothing(admin_client, data, message):
    if "file" in data:
        name, content = data["file"]
        data = {**data, "file": SimpleUploadedFile(name, content)}
    response = admin_client.post(LOAD_URL, data)
    assert response.status_code == 200
    assert str(message) in response.content.decode()
    assert AccountBatch.objects.count() == 0


def test_too_big_an_upload_is_refused(admin_client, settings):
    settings.POOL_UPLOAD_MAX_BYTES = 100
    response = admin_client.post(LOAD_URL, {"file": SimpleUploadedFile("a.txt", b"x" * 101)})
    assert "larger than" in response.content.decode()
    assert AccountBatch.objects.count() == 0


def test_list_and_change_pages_mask_tokens(admin_client):
    account = AccountFactory()
    listing = admin_client.get(LIST_URL).content.decode()
    change = admin_client.get(
        reverse("admin:accounts_account_change", args=[account.pk])
    ).content.decode()
    for html in (listing, change):
        assert account.email in html
        assert shown_masked(account.access_token) in html
        assert_no_secret(html, account.access_token, account.session_token, account.refresh_token)
    assert 'data-status="available">1<' in listing


def test_search_by_email_prefix_and_filters(admin_client):
    AccountFactory(email="alice@example.com")
    AccountFactory(email="bob@example.com", status=AccountStatus.RETIRED)
    html = admin_client.get(LIST_URL, {"q": "ALI"}).content.decode()
    assert "alice@example.com" in html and "bob@example.com" not in html
    html = admin_client.get(LIST_URL, {"status__exact": "retired"}).content.decode()
    assert "bob@example.com" in html and "alice@example.com" not in html


def test_retire_asks_for_confirmation_then_retires_only_what_nobody_is_working_on(
    admin_client, admin_user
):
    available = AccountFactory()
    consumed = AccountFactory(status=AccountStatus.CONSUMED, consumed_at="2026-01-01T00:00Z")
    selected = {"action": "retire_selected", "_selected_action": [available.pk, consumed.pk]}
    asked = admin_client.post(LIST_URL, selected)
    html = asked.content.decode()
    assert asked.status_code == 200 and 'id="retire-form"' in html
    assert "1 of the 2 selected accounts will be retired" in html
    assert available.email in html and consumed.email in html
    assert not Account.objects.filter(status=AccountStatus.RETIRED).exists()  # nothing yet

    response = admin_client.post(LIST_URL, {**selected, "confirmed": "yes"}, follow=True)
    assert response.status_code == 200
    available.refresh_from_db()
    consumed.refresh_from_db()
    assert (available.status, consumed.status) == (AccountStatus.RETIRED, AccountStatus.CONSUMED)
    entry = LogEntry.objects.get()
    assert (entry.object_id, entry.user_id) == (str(available.pk), admin_user.pk)


def test_retiring_every_account_of_a_filtered_list_keeps_the_filter(admin_client):
    kept = AccountFactory(email="keep@example.com")
    gone = [AccountFactory(email=f"gone{n}@example.com") for n in range(2)]
    url = f"{LIST_URL}?q=gone"
    asked = admin_client.post(
        url, {"action": "retire_selected", "select_across": "1", "_selected_action": [gone[0].pk]}
    )
    form_url = re.search(
        r'<form method="post" action="([^"]+)" id="retire-form"', asked.content.decode()
    ).group(1)
    assert "q=gone" in form_url
    admin_client.post(
        form_url.replace("&amp;", "&"),
        {
            "action": "retire_selected",
            "select_across": "1",
            "confirmed": "yes",
            "_selected_action": [gone[0].pk],
        },
    )
    assert set(
        Account.objects.filter(status=AccountStatus.RETIRED).values_list("email", flat=True)
    ) == {a.email for a in gone}
    kept.refresh_from_db()
    assert kept.status == AccountStatus.AVAILABLE


def test_the_stock_filter_separates_usable_held_and_flagged_accounts(admin_client):
    usable = AccountFactory(email="usable@example.com")
    held = AccountFactory(
        email="held@example.com", usable=False, unusable_reason=UnusableReason.UNKNOWN_OUTCOMES
    )
    flagged = AccountFactory(
        email="flagged@example.com", usable=False, unusable_reason=UnusableReason.AT_EXPIRED
    )
    AccountFactory(email="retired@example.com", status=AccountStatus.RETIRED)
    emails = {}
    for kind in ("usable", "held", "flagged"):
        response = admin_client.get(LIST_URL, {"stock": kind})
        emails[kind] = {account.email for account in response.context["cl"].result_list}
    assert emails == {"usable": {usable.email}, "held": {held.email}, "flagged": {flagged.email}}
    html = admin_client.get(LIST_URL).content.decode()
    assert (
        str(UnusableReason.UNKNOWN_OUTCOMES.label) in html
        and str(UnusableReason.AT_EXPIRED.label) in html
    )


def test_saving_notes_writes_only_the_notes(admin_client):
    account = AccountFactory()
    Account.objects.filter(pk=account.pk).update(status=AccountStatus.REJECTED)  # meanwhile
    url = reverse("admin:accounts_account_change", args=[account.pk])
    admin_client.post(url, {"notes": "checked by hand"})
    account.refresh_from_db()
    assert (account.notes, account.status) == ("checked by hand", AccountStatus.REJECTED)


def test_load_page_needs_the_permission(client):
    client.force_login(staff_with(username="viewer"))
    assert client.get(LOAD_URL).status_code == 403
    client.logout()
    assert client.get(LOAD_URL).status_code == 302  # to the login page


def test_pages_in_simplified_chinese(admin_client):
    AccountFactory()
    html = admin_client.get(LOAD_URL, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "加载账号" in html
    listing = admin_client.get(LIST_URL, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "可用" in listing


# --- The worker's progress, the problem list, and whose upload it is ----------------------------


def status_url(batch):
    return reverse("admin:accounts_account_load_status", args=[batch.pk])


def problems_url(batch):
    return reverse("admin:accounts_account_load_problems", args=[batch.pk])


def test_the_status_endpoint_tells_the_progress_while_the_worker_reads(
    admin_client, material, worker
):
    lines = [fakes.render_line(material(), "positional"), "nonsense", "more nonsense"]
    admin_client.post(LOAD_URL, {"text": "\n".join(lines)})
    batch = AccountBatch.objects.get()
    before = admin_client.get(status_url(batch)).json()
    assert (before["status"], before["running"], before["total_lines"], before["lines_read"]) == (
        "previewing",
        True,
        3,
        0,
    )
    worker()
    after = admin_client.get(status_url(batch)).json()
    assert {
        k: after[k] for k in ("status", "running", "lines_read", "created", "duplicates", "invalid")
    } == {
        "status": "pending",
        "running": False,
        "lines_read": 3,
        "created": 1,
        "duplicates": 0,
        "invalid": 2,
    }


def test_the_preview_shows_the_first_1000_problem_lines_and_the_csv_has_them_all(
    admin_client, material, worker
):
    good = material()
    text = "\n".join([fakes.render_line(good, "positional")] + ["=cmd|' /C calc'!A0"] * 1200)
    admin_client.post(LOAD_URL, {"file": SimpleUploadedFile("many.txt", text.encode())})
    batch = AccountBatch.objects.get()
    worker()
    html = admin_client.get(preview_url(batch)).content.decode()
    rows = re.findall(r'<tr class="outcome-(\w+)" data-line="(\d+)"', html)
    assert len([r for r in rows if r[0] == "invalid"]) == 1000
    assert 'id="hidden-problems"' in html and "200 more lines" in html

    response = admin_client.get(problems_url(batch))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    records = list(csv.reader(io.StringIO(body)))
    assert records[0] == ["line", "outcome", "email", "reasons"]
    assert [int(r[0]) for r in records[1:]] == list(range(2, 1202))
    assert all(r[1] == "invalid" and r[3] for r in records[1:])
    assert not any(cell.startswith("=") for r in records for cell in r)  # neutralised
    assert_no_secret(body, good["access_token"], good["session_token"], good["refresh_token"])


@pytest.fixture
def other_staff(client):
    """A second staff member who may load accounts too."""
    client.force_login(
        staff_with("accounts.add_accountbatch", "accounts.view_account", username="other")
    )
    return client


def test_another_staff_members_upload_is_a_404(admin_client, other_staff, material, worker):
    other_staff.post(LOAD_URL, {"text": fakes.render_line(material(), "positional")})
    theirs = AccountBatch.objects.get()
    admin_client.post(LOAD_URL, {"text": fakes.render_line(material(), "positional")})
    mine = AccountBatch.objects.exclude(pk=theirs.pk).get()  # the superuser's
    worker()

    for url in (preview_url(mine), status_url(mine), problems_url(mine)):
        assert other_staff.get(url).status_code == 404
    for action in ("confirm", "cancel", "retry"):
        assert other_staff.post(preview_url(mine), {action: "1"}).status_code == 404
    mine.refresh_from_db()
    assert mine.status == BatchStatus.PENDING and mine.content is not None
    # Their own is theirs to see; a superuser sees every upload.
    assert other_staff.get(status_url(theirs)).status_code == 200
    assert admin_client.get(preview_url(theirs)).status_code == 200


def test_a_failed_batch_can_be_run_again_or_cancelled(admin_client, material, worker):
    lines = [fakes.render_line(material(), "positional") for _ in range(2)]
    admin_client.post(LOAD_URL, {"text": "\n".join(lines)})
    batch = AccountBatch.objects.get()
    AccountBatch.objects.filter(pk=batch.pk).update(
        status=BatchStatus.FAILED, error="The worker stopped."
    )
    page = admin_client.get(preview_url(batch)).content.decode()
    assert "The worker stopped." in page and 'name="retry"' in page

    assert admin_client.post(preview_url(batch), {"retry": "1"}).status_code == 302
    batch.refresh_from_db()
    assert batch.status == BatchStatus.PREVIEWING and batch.error == ""
    worker()
    batch.refresh_from_db()
    assert (batch.status, batch.created_count) == (BatchStatus.PENDING, 2)

    AccountBatch.objects.filter(pk=batch.pk).update(status=BatchStatus.FAILED)
    admin_client.post(preview_url(batch), {"cancel": "1"})
    batch.refresh_from_db()
    assert (batch.status, batch.content, batch.problem_chunks.count()) == (
        BatchStatus.CANCELLED,
        None,
        0,
    )


def test_an_access_token_with_a_313_character_email_claim_is_an_invalid_line(
    admin_client, material, worker
):
    """On PostgreSQL the confirm used to answer 500 (value too long) and lose the valid lines."""
    good = material()
    at = fakes.make_access_token(email="a" * 301 + "@example.com")
    assert len("a" * 301 + "@example.com") == 313
    text = "\n".join(
        [fakes.render_line(good, "positional"), f"{at}----{fakes.make_session_token()}"]
    )
    admin_client.post(LOAD_URL, {"text": text})
    batch = AccountBatch.objects.get()
    worker()
    assert admin_client.post(preview_url(batch), {"confirm": "1"}).status_code == 302
    worker()
    batch.refresh_from_db()
    assert (batch.status, batch.created_count, batch.invalid_count) == (BatchStatus.LOADED, 1, 1)
    assert Account.objects.get().email == good["email"]
    row = batch.detail["rows"][1]
    assert row["outcome"] == "invalid" and "254" in row["messages"][0]


def test_a_label_must_fit_and_be_plain_text(admin_client, material):
    line = fakes.render_line(material(), "positional")
    for label in ("x" * 101, "bad\x00label"):
        response = admin_client.post(LOAD_URL, {"text": line, "label": label})
        assert response.status_code == 200 and 'class="errorlist' in response.content.decode()
    assert not AccountBatch.objects.exists()


def test_the_progress_page_and_the_batch_page_in_simplified_chinese(admin_client, material):
    admin_client.post(LOAD_URL, {"text": fakes.render_line(material(), "positional")})
    batch = AccountBatch.objects.get()
    html = admin_client.get(preview_url(batch), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "正在读取上传内容" in html and "已读取" in html
    # The batch's admin page works with the new fields, and shows neither the text nor the detail rows.
    change = admin_client.get(reverse("admin:accounts_accountbatch_change", args=[batch.pk]))
    assert change.status_code == 200 and "field-detail" not in change.content.decode()


def test_notes_have_a_length_and_a_shape(admin_client):
    account = AccountFactory()
    url = reverse("admin:accounts_account_change", args=[account.pk])
    assert (
        admin_client.post(url, {"notes": "x" * 10_001}).status_code == 200
    )  # the form, with its error
    assert admin_client.post(url, {"notes": "bad\x07bell"}).status_code == 200
    account.refresh_from_db()
    assert account.notes == ""
    assert admin_client.post(url, {"notes": "fine\nnotes"}).status_code == 302


# --- Readable results: one reason a line, the email, the upload's name, the limit ---------------


def test_an_invalid_line_shows_its_email_and_one_reason_in_the_preview_and_the_csv(
    admin_client, material, worker
):
    good = material()
    text = "\n".join(
        [
            fakes.render_line(good, "positional"),
            "Bought on Friday from the usual supplier, see the notes",
            f"{good['email']} paid 12 dollars",
        ]
    )
    upload = SimpleUploadedFile("bad.txt", text.encode())
    admin_client.post(LOAD_URL, {"file": upload})
    batch = AccountBatch.objects.get()
    worker()
    html = admin_client.get(preview_url(batch)).content.decode()
    rows = dict(re.findall(r'data-line="(\d+)">(.*?)</tr>', html, re.S))
    # One reason for the line of text (it had seven, one a word), and none names a part.
    assert rows["2"].count("Not an account line") == 1 and "Part " not in rows["2"]
    assert good["email"] in rows["3"] and "Parts 2, 3, 4 are not recognised" in rows["3"]
    records = list(
        csv.reader(io.StringIO(b"".join(admin_client.get(problems_url(batch))).decode()))
    )
    assert [r[:3] for r in records[1:]] == [["2", "invalid", ""], ["3", "invalid", good["email"]]]
    assert records[1][3].startswith("Not an account line") and ";" not in records[1][3]


def test_the_preview_is_titled_by_the_upload_and_a_batch_label_is_not_doubled(
    admin_client, material, worker
):
    lines = [fakes.render_line(material(), "positional") for _ in range(9)]
    admin_client.post(LOAD_URL, {"file": SimpleUploadedFile("bad.txt", "\n".join(lines).encode())})
    admin_client.post(LOAD_URL, {"text": lines[0]})
    named, pasted = AccountBatch.objects.order_by("id")
    assert (
        '<span id="upload-name">bad.txt, 9 lines</span>'
        in admin_client.get(preview_url(named)).content.decode()
    )
    page = admin_client.get(preview_url(pasted)).content.decode()
    assert '<span id="upload-name">Pasted text, 1 line</span>' in page
    # A pasted upload's default label is its time: shown once, not "08:05 (08:05)".
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", pasted.label) and str(pasted) == pasted.label
    assert str(named) == f"bad.txt ({named.created_at:%Y-%m-%d %H:%M})"
    listed = admin_client.get(LIST_URL).content.decode()
    assert f"({pasted.label})" not in listed


def test_the_load_page_states_the_limit_and_every_separator(admin_client, settings):
    settings.POOL_UPLOAD_MAX_BYTES = 5 * 1024 * 1024
    html = admin_client.get(LOAD_URL).content.decode()
    formats = re.search(r'<p id="load-formats">(.*?)</p>', html, re.S).group(1)
    for separator in ("commas", "<code>----</code>", "<code>|</code>", "a tab", "spaces"):
        assert separator in formats, separator
    assert "at most 5.0\xa0MB" in re.search(r'<p id="load-limit">(.*?)</p>', html, re.S).group(1)
    # The button turns itself off once the upload is sent, and says so.
    assert 'id="load-sending" hidden' in html


def test_the_preview_buttons_work_once(admin_client, material, worker):
    admin_client.post(LOAD_URL, {"text": fakes.render_line(material(), "positional")})
    worker()
    html = admin_client.get(preview_url(AccountBatch.objects.get())).content.decode()
    assert 'id="confirm-form" class="submit-once"' in html and "form.submit-once" in html
