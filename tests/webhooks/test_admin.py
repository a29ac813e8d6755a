"""The replenishment history and controls in the admin."""

import pytest
from django.urls import reverse

from tests.factories import AccountFactory
from tests.accounts.test_admin import assert_no_secret
from webhooks import services
from webhooks.models import ReplenishmentRun, RunStatus, RunTrigger

pytestmark = pytest.mark.django_db


def test_history_pages_show_the_run_and_no_secret(admin_client, manager):
    account = AccountFactory()
    manager.plan(["http500"])
    services.event_receive(current_seats=9, threshold=10, message="库存不足", payload="{}", remote_addr="127.0.0.1")
    run = services.run_execute(run_id=ReplenishmentRun.objects.get().pk)
    for name in ("webhookevent", "replenishmentrun", "importattempt"):
        response = admin_client.get(reverse(f"admin:webhooks_{name}_changelist"))
        assert response.status_code == 200, name
        assert_no_secret(response.content.decode(), account.access_token, account.session_token, account.refresh_token)
    attempts = admin_client.get(reverse("admin:webhooks_importattempt_changelist"), {"q": account.email[:5]})
    assert account.email in attempts.content.decode()
    detail = admin_client.get(reverse("admin:webhooks_replenishmentrun_change", args=[run.pk]))
    assert "ceil((10 + 5 - 9) / 5)" in detail.content.decode()


def test_push_now_queues_a_manual_run(admin_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(reverse("admin:webhooks_replenishmentrun_push"), {"accounts": 3})
    assert response.status_code == 302
    run = ReplenishmentRun.objects.get()
    assert (run.trigger, run.status, run.requested_accounts) == (RunTrigger.MANUAL, RunStatus.QUEUED, 3)
    assert run.requested_by.username == "admin" and len(callbacks) == 1


def test_push_adds_to_a_run_already_queued(admin_client):
    services.run_wake(trigger=RunTrigger.WEBHOOK)
    admin_client.post(reverse("admin:webhooks_replenishmentrun_push"), {"accounts": 2})
    assert ReplenishmentRun.objects.get().requested_accounts == 2


def test_push_needs_the_permission(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:webhooks_replenishmentrun_push")).status_code == 403


def test_policy_is_one_editable_row(admin_client):
    response = admin_client.get(reverse("admin:webhooks_replenishmentpolicy_changelist"))
    assert response.status_code == 302
    page = admin_client.get(response.url)
    assert page.status_code == 200 and 'name="max_accounts_per_hour"' in page.content.decode()


def test_the_attempts_list_decrypts_no_token(admin_client, manager, monkeypatch):
    from accounts import crypto

    AccountFactory.create_batch(3)
    services.event_receive(current_seats=0, threshold=10, message="", payload="{}", remote_addr=None)
    services.run_execute(run_id=ReplenishmentRun.objects.get(status=RunStatus.QUEUED).pk)
    decrypted = []
    real_decrypt = crypto.decrypt
    monkeypatch.setattr(crypto, "decrypt", lambda value: decrypted.append(1) or real_decrypt(value))

    page = admin_client.get(reverse("admin:webhooks_importattempt_changelist"))

    assert page.status_code == 200 and page.content.count(b"@example.com") >= 3
    assert decrypted == []


@pytest.mark.parametrize("model", ["webhookevent", "replenishmentrun", "importattempt"])
def test_history_lists_say_more_than_the_cap_instead_of_counting_everything(admin_client, monkeypatch, model):
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
