"""The replenishment history and controls in the admin."""

import re

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from tests.factories import AccountFactory
from tests.support.secrets import assert_no_secret
from tests.support.users import staff_with
from webhooks import services
from webhooks.models import ImportAttempt, ReplenishmentRun, RunStatus, RunTrigger, Shortfall

pytestmark = pytest.mark.django_db


def test_history_pages_show_the_run_and_no_secret(admin_client, manager):
    account = AccountFactory()
    manager.plan(["http500"])
    services.event_receive(
        current_seats=9, threshold=10, message="库存不足", payload="{}", remote_addr="127.0.0.1"
    )
    run = services.run_execute(run_id=ReplenishmentRun.objects.get().pk)
    for name in ("webhookevent", "replenishmentrun", "importattempt"):
        response = admin_client.get(reverse(f"admin:webhooks_{name}_changelist"))
        assert response.status_code == 200, name
        assert_no_secret(
            response.content.decode(),
            account.access_token,
            account.session_token,
            account.refresh_token,
        )
    attempts = admin_client.get(
        reverse("admin:webhooks_importattempt_changelist"), {"q": account.email[:5]}
    )
    assert account.email in attempts.content.decode()
    detail = admin_client.get(reverse("admin:webhooks_replenishmentrun_change", args=[run.pk]))
    assert "ceil((10 + 5 - 9) / 5)" in detail.content.decode()


def test_push_now_queues_a_manual_run(admin_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            reverse("admin:webhooks_replenishmentrun_push"), {"accounts": 3}
        )
    assert response.status_code == 302
    run = ReplenishmentRun.objects.get()
    assert (run.trigger, run.status, run.requested_accounts) == (
        RunTrigger.MANUAL,
        RunStatus.QUEUED,
        3,
    )
    assert run.requested_by.username == "admin" and len(callbacks) == 1


def test_push_adds_to_a_run_already_queued(admin_client):
    services.run_wake(trigger=RunTrigger.WEBHOOK)
    admin_client.post(reverse("admin:webhooks_replenishmentrun_push"), {"accounts": 2})
    assert ReplenishmentRun.objects.get().requested_accounts == 2


def test_push_needs_the_permission(client):
    client.force_login(staff_with(username="viewer"))
    assert client.get(reverse("admin:webhooks_replenishmentrun_push")).status_code == 403


def test_policy_is_one_editable_row(admin_client):
    response = admin_client.get(reverse("admin:webhooks_replenishmentpolicy_changelist"))
    assert response.status_code == 302
    page = admin_client.get(response.url)
    assert page.status_code == 200 and 'name="max_accounts_per_hour"' in page.content.decode()


def test_the_attempts_list_decrypts_no_token(admin_client, manager, monkeypatch):
    from accounts import crypto

    AccountFactory.create_batch(3)
    services.event_receive(
        current_seats=0, threshold=10, message="", payload="{}", remote_addr=None
    )
    services.run_execute(run_id=ReplenishmentRun.objects.get(status=RunStatus.QUEUED).pk)
    decrypted = []
    real_decrypt = crypto.decrypt
    monkeypatch.setattr(crypto, "decrypt", lambda value: decrypted.append(1) or real_decrypt(value))

    page = admin_client.get(reverse("admin:webhooks_importattempt_changelist"))

    assert page.status_code == 200 and page.content.count(b"@example.com") >= 3
    assert decrypted == []


@pytest.mark.parametrize("model", ["webhookevent", "replenishmentrun", "importattempt"])
def test_history_lists_say_more_than_the_cap_instead_of_counting_everything(
    admin_client, monkeypatch, model
):
    from accounts.admin import CappedCountPaginator
    from webhooks.models import AttemptOutcome, ImportAttempt

    monkeypatch.setattr(CappedCountPaginator, "CAP", 2)
    account = AccountFactory()
    for n in range(3):
        # A reason each: the same refusal within a minute would be folded into one row.
        services.event_refuse(reason=f"test {n}", key_ok=False, payload="", remote_addr=None)
        run = ReplenishmentRun.objects.create(trigger=RunTrigger.MANUAL, status=RunStatus.FINISHED)
        ImportAttempt.objects.create(account=account, run=run, outcome=AttemptOutcome.UNKNOWN)

    page = admin_client.get(reverse(f"admin:webhooks_{model}_changelist"))

    assert page.status_code == 200 and b"more than 2" in page.content


# --- A run's page tells the whole story ---------------------------------------------------------


def test_a_runs_page_lists_its_attempts_and_links_to_them(admin_client, manager):
    kept, refused = AccountFactory(), AccountFactory()
    manager.plan(["ok", "reject"])
    services.event_receive(
        current_seats=0, threshold=10, message="", payload="{}", remote_addr="127.0.0.1"
    )
    run = services.run_execute(run_id=ReplenishmentRun.objects.get().pk)
    other = ReplenishmentRun.objects.create(trigger=RunTrigger.MANUAL, status=RunStatus.FINISHED)

    html = admin_client.get(
        reverse("admin:webhooks_replenishmentrun_change", args=[run.pk])
    ).content.decode()
    table = html.split('id="run-attempts"')[1]
    rows = re.findall(r'<tr data-attempt="\d+">(.*?)</tr>', table, re.S)
    assert len(rows) == ImportAttempt.objects.filter(run=run).count() >= 2
    assert kept.email in table and refused.email in table
    assert 'data-outcome="consumed"' in table and 'data-outcome="rejected"' in table
    rejection = ImportAttempt.objects.get(run=run, outcome="rejected")
    assert "<td>200</td>" in table and f"<td>{rejection.http_status}</td>" in table
    assert rejection.manager_message and escape(rejection.manager_message) in table
    assert_no_secret(html, kept.access_token, kept.session_token, kept.refresh_token)

    link = re.search(r'href="([^"]+)" id="run-attempts-link"', table).group(1).replace("&amp;", "&")
    listed = admin_client.get(link)
    assert listed.status_code == 200  # not a redirect to "?e=1": the filter is allowed
    assert listed.context["cl"].result_count == len(rows)
    empty = admin_client.get(
        reverse("admin:webhooks_replenishmentrun_change", args=[other.pk])
    ).content.decode()
    assert "This run sent no account." in empty


def test_a_finished_run_shows_no_lease_and_says_why_it_was_short(admin_client):
    run = ReplenishmentRun.objects.create(
        trigger=RunTrigger.WEBHOOK,
        status=RunStatus.FINISHED,
        need=4,
        shortfall=3,
        shortfall_reason=Shortfall.POOL_EMPTY,
        stray_answers=["stray@example.com: ok"],
        lease_expires_at=timezone.now(),
    )
    html = admin_client.get(
        reverse("admin:webhooks_replenishmentrun_change", args=[run.pk])
    ).content.decode()
    assert "Lease expires" not in html
    assert "Accounts short" in html and str(Shortfall.POOL_EMPTY.label) in html
    assert (
        "stray@example.com: ok" in html and html.count("Answers that matched no account sent") == 1
    )

    ReplenishmentRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, started_at=timezone.now()
    )
    html = admin_client.get(
        reverse("admin:webhooks_replenishmentrun_change", args=[run.pk])
    ).content.decode()
    assert "Lease expires" in html
