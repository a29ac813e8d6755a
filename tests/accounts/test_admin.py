"""The pool's admin, through the test client: load page, preview, confirm, list, masking."""

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts import forms as load_forms
from accounts.models import Account, AccountBatch, AccountStatus, BatchStatus
from accounts.services import MSG_BATCH_NOT_PENDING
from tests import fakes
from tests.factories import AccountFactory

pytestmark = pytest.mark.django_db

LOAD_URL = reverse("admin:accounts_account_load")
LIST_URL = reverse("admin:accounts_account_changelist")


def secret_slices(*secrets):
    """Every 16-character slice of every secret: none may appear in a page."""
    return {s[i : i + 16] for s in secrets if s for i in range(0, len(s) - 15, 8)}


def assert_no_secret(html: str, *secrets):
    leaked = [piece for piece in secret_slices(*secrets) if piece in html]
    assert not leaked, f"secret material in page: {leaked[:3]}"


def preview_url(batch):
    return reverse("admin:accounts_account_load_preview", args=[batch.pk])


def test_upload_preview_confirm(admin_client, material):
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

    preview = admin_client.get(response.url)
    html = preview.content.decode()
    assert preview.status_code == 200
    assert Account.objects.count() == 1  # nothing saved by the preview
    rows = {int(n): cls for cls, n in re.findall(r'<tr class="outcome-(\w+)" data-line="(\d+)"', html)}
    assert rows == {1: "created", 2: "invalid", 3: "duplicate"}
    assert good["email"] in html and shown_masked(good["session_token"]) in html
    assert_no_secret(html, good["access_token"], good["session_token"], good["refresh_token"])
    assert_no_secret(html, bad_email["access_token"], existing.access_token)

    done = admin_client.post(preview_url(batch), {"confirm": "1"})
    assert done.status_code == 200
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


def test_pasted_text_and_a_second_confirm_loads_once(admin_client, material):
    response = admin_client.post(LOAD_URL, {"text": fakes.render_line(material(), "delimited-dash")})
    batch = AccountBatch.objects.get()
    assert admin_client.post(preview_url(batch), {"confirm": "1"}).status_code == 200
    again = admin_client.post(preview_url(batch), {"confirm": "1"}, follow=True)
    assert str(MSG_BATCH_NOT_PENDING) in again.content.decode()
    assert Account.objects.count() == 1
    assert response.status_code == 302


def test_cancel_drops_the_upload(admin_client, material):
    admin_client.post(LOAD_URL, {"text": fakes.render_line(material(), "positional")})
    batch = AccountBatch.objects.get()
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
    change = admin_client.get(reverse("admin:accounts_account_change", args=[account.pk])).content.decode()
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


def test_retire_action_retires_only_what_nobody_is_working_on(admin_client, admin_user):
    available = AccountFactory()
    consumed = AccountFactory(status=AccountStatus.CONSUMED, consumed_at="2026-01-01T00:00Z")
    response = admin_client.post(
        LIST_URL,
        {"action": "retire_selected", "_selected_action": [available.pk, consumed.pk]},
        follow=True,
    )
    assert response.status_code == 200
    available.refresh_from_db()
    consumed.refresh_from_db()
    assert (available.status, consumed.status) == (AccountStatus.RETIRED, AccountStatus.CONSUMED)
    entry = LogEntry.objects.get()
    assert (entry.object_id, entry.user_id) == (str(available.pk), admin_user.pk)


def test_saving_notes_writes_only_the_notes(admin_client):
    account = AccountFactory()
    Account.objects.filter(pk=account.pk).update(status=AccountStatus.REJECTED)  # meanwhile
    url = reverse("admin:accounts_account_change", args=[account.pk])
    admin_client.post(url, {"notes": "checked by hand"})
    account.refresh_from_db()
    assert (account.notes, account.status) == ("checked by hand", AccountStatus.REJECTED)


def test_load_page_needs_the_permission(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(LOAD_URL).status_code == 403
    client.logout()
    assert client.get(LOAD_URL).status_code == 302  # to the login page


def test_pages_in_simplified_chinese(admin_client):
    AccountFactory()
    html = admin_client.get(LOAD_URL, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "加载账号" in html
    listing = admin_client.get(LIST_URL, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "可用" in listing
