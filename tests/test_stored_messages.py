"""Texts the service stores render in the reader's language (poolsite.messages).

Each stored text is written by the service that writes it in production, then read on the pages
that show it, asked for in 简体中文 and in English: the Chinese page shows the translation, the
English page the English text, and the text column itself stays English (the API, exports and
logs read it). Rows written before the codes were kept (code column NULL) show their text as
stored; notifications go out in NOTIFY_LANGUAGE, rendered from the code.
"""

import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation

from accounts import services as pool
from accounts.models import Account, AccountStatus
from alerts.delivery import alert_send_test
from alerts.evaluation import alert_evaluate
from alerts.models import AlertEvent, AlertSettings
from poolsite.messages import message_define, message_render, message_store
from tests.factories import AccountFactory, account_sealed_with_foreign_key
from tests.support.notify import Receiver
from webhooks import follow_up, services
from webhooks.models import (
    EventStatus,
    FollowUpRound,
    ImportAttempt,
    ReplenishmentRun,
    RoundStatus,
    RunStatus,
    RunTrigger,
    WebhookEvent,
)

pytestmark = pytest.mark.django_db

WEBHOOK = "/webhooks/low-stock/"


@pytest.fixture
def pages(admin_user):
    """page(url, language) → the page's HTML, for a staff member whose browser asks for it."""
    client = Client()
    client.force_login(admin_user)

    def page(url: str, language: str) -> str:
        response = client.get(url, headers={"Accept-Language": language})
        assert response.status_code == 200, url
        assert response["Content-Language"] == language
        return response.content.decode()

    return page


def both(pages, url: str, *, zh: str, en: str) -> None:
    chinese, english = pages(url, "zh-hans"), pages(url, "en")
    assert zh in chinese, f"{url}: {zh!r} not on the Chinese page"
    assert en not in chinese, f"{url}: {en!r} on the Chinese page"
    assert en in english, f"{url}: {en!r} not on the English page"


# --- Written by the services ----------------------------------------------------------------


def test_a_run_stopped_on_configuration_renders_its_error_and_need_per_reader(
    manager, settings, pages
):
    AccountFactory()
    settings.MANAGER_API_KEY = "a-key-the-manager-does-not-know"
    services.event_receive(current_seats=3, threshold=10, message="", payload="", remote_addr=None)
    run = ReplenishmentRun.objects.get(status=RunStatus.QUEUED)
    run = services.run_execute(run_id=run.pk)
    assert run.status == RunStatus.CONFIG_ERROR
    assert run.error.startswith("The manager refused the request (HTTP 401)")  # English kept
    assert run.need_explained.startswith(f"event #{WebhookEvent.objects.get().pk}: ceil(")
    page = reverse("admin:webhooks_replenishmentrun_change", args=[run.pk])
    both(pages, page, zh="车位管理系统拒绝了请求（HTTP 401）", en="The manager refused the request")
    both(pages, page, zh="最近一小时已有 0", en="in the last hour")
    both(
        pages,
        reverse("admin:webhooks_replenishmentrun_changelist"),
        zh="车位管理系统拒绝了请求",
        en="The manager refused the request",
    )
    # The dashboard keeps a run stopped on configuration in view, with its error.
    both(pages, reverse("admin:index"), zh="车位管理系统拒绝了请求", en="The manager refused")


def test_a_recovered_lease_renders_on_the_run_the_attempt_and_the_account(pages):
    past = timezone.now() - timedelta(minutes=5)
    run = ReplenishmentRun.objects.create(
        trigger=RunTrigger.WEBHOOK, status=RunStatus.RUNNING, started_at=past, lease_expires_at=past
    )
    account = AccountFactory(
        status=AccountStatus.RESERVED, lease_id=run.lease_id, lease_expires_at=past
    )
    assert services.run_recover_stale(now=timezone.now()) == (1, 1)
    attempt = ImportAttempt.objects.get()
    assert attempt.error == pool.MSG_LEASE_EXPIRED
    assert Account.objects.get(pk=account.pk).last_error == pool.MSG_LEASE_EXPIRED
    worker_zh, worker_en = "worker 进程在补号任务完成前停止了", "The worker stopped before the run"
    lease_zh, lease_en = "租约到期后收回", "Recovered after its lease expired"
    both(
        pages,
        reverse("admin:webhooks_replenishmentrun_change", args=[run.pk]),
        zh=worker_zh,
        en=worker_en,
    )
    both(
        pages,
        reverse("admin:webhooks_replenishmentrun_change", args=[run.pk]),
        zh=lease_zh,
        en=lease_en,
    )
    both(pages, reverse("admin:webhooks_importattempt_changelist"), zh=lease_zh, en=lease_en)
    both(
        pages,
        reverse("admin:webhooks_importattempt_change", args=[attempt.pk]),
        zh=lease_zh,
        en=lease_en,
    )
    both(
        pages,
        reverse("admin:accounts_account_change", args=[account.pk]),
        zh=lease_zh,
        en=lease_en,
    )


def test_an_account_held_for_a_missing_key_says_so_per_reader(settings, pages):
    account = account_sealed_with_foreign_key(settings)
    now = timezone.now()
    taken = pool.account_reserve_batch(
        count=1, lease_id=uuid.uuid4(), lease_until=now + timedelta(minutes=1), now=now
    )
    assert taken == []
    account.refresh_from_db()
    assert account.last_error.startswith("Held, never sent: sealed with a key")
    both(
        pages,
        reverse("admin:accounts_account_change", args=[account.pk]),
        zh="已扣留，从未发送：加密它的密钥本服务没有",
        en="Held, never sent: sealed with a key",
    )


def test_the_managers_refusal_stays_as_received(pages):
    """An account's last error in the manager's words is shown as it came, in either language."""
    lease = uuid.uuid4()
    now = timezone.now()
    account = AccountFactory(
        status=AccountStatus.RESERVED, lease_id=lease, lease_expires_at=now + timedelta(minutes=1)
    )
    words = "Token expired for this Team"
    assert pool.account_settle_rejected(account_id=account.pk, lease_id=lease, now=now, error=words)
    account.refresh_from_db()
    assert (account.last_error, account.last_error_msg) == (words, None)
    url = reverse("admin:accounts_account_change", args=[account.pk])
    assert words in pages(url, "zh-hans") and words in pages(url, "en")


def test_a_refused_webhook_call_renders_its_reason_per_reader_and_answers_in_english(
    client, settings, pages
):
    settings.MANAGER_API_KEY = "the-right-key-0123456789"
    response = client.post(
        WEBHOOK,
        data="{}",
        content_type="application/json",
        headers={"X-API-Key": "wrong", "Accept-Language": "zh-hans"},
    )
    # The API's answer is for the manager: English, whatever the caller's language.
    assert response.status_code == 401
    assert response.json() == {"error": "Missing or wrong X-API-Key."}
    response = client.post(
        WEBHOOK,
        data='{"event": "low_stock", "current_seats": -1, "threshold": 1}',
        content_type="application/json",
        headers={"X-API-Key": "the-right-key-0123456789"},
    )
    assert response.status_code == 400
    assert set(WebhookEvent.objects.values_list("refusal", flat=True)) == {
        "Missing or wrong X-API-Key.",
        "current_seats must be a whole number from 0 to 999999999.",
    }
    events = reverse("admin:webhooks_webhookevent_changelist")
    both(pages, events, zh="缺少 X-API-Key 或其不正确。", en="Missing or wrong X-API-Key.")
    both(
        pages,
        events,
        zh="current_seats 必须是 0 到 999999999 之间的整数。",
        en="must be a whole number",
    )
    refused = WebhookEvent.objects.filter(refusal__startswith="Missing").get()
    both(
        pages,
        reverse("admin:webhooks_webhookevent_change", args=[refused.pk]),
        zh="缺少 X-API-Key 或其不正确。",
        en="Missing or wrong X-API-Key.",
    )
    # The dashboard's recent events carry the reason as a tooltip.
    both(pages, reverse("admin:index"), zh="缺少 X-API-Key 或其不正确。", en="Missing or wrong")


def test_a_follow_up_round_without_a_manager_renders_its_error_per_reader(settings, pages):
    settings.MANAGER_BASE_URL = ""
    round_ = FollowUpRound.objects.create(status=RoundStatus.QUEUED)
    result = follow_up.team_round_run(round_id=round_.pk)
    assert result.stopped == "MANAGER_BASE_URL and MANAGER_API_KEY are not set."
    both(
        pages,
        reverse("admin:webhooks_followupround_changelist"),
        zh="未设置 MANAGER_BASE_URL 和 MANAGER_API_KEY。",
        en="MANAGER_BASE_URL and MANAGER_API_KEY are not set.",
    )


def low_stock_alert() -> AlertEvent:
    AlertSettings.objects.update_or_create(
        pk=1,
        defaults={
            "stock_below": 3,
            "runway_below_days": 0,
            "config_error": False,
            "unknown_in_a_row": 0,
        },
    )
    AccountFactory.create_batch(2)
    alert_evaluate(now=timezone.now())
    return AlertEvent.objects.get()


def test_an_alert_renders_its_title_and_message_per_reader(settings, pages):
    settings.NOTIFY_URLS = []
    settings.NOTIFY_LANGUAGE = "zh-hans"  # notifications' language is not the pages'
    event = low_stock_alert()
    assert event.title == "Spare-account pool: few accounts left"
    title_zh, title_en = "账号池：账号所剩不多", "Spare-account pool: few accounts left"
    body_zh, body_en = "账号池中仅剩 2 个有效账号", "Only 2 usable accounts are left"
    both(pages, reverse("admin:alerts_alertevent_changelist"), zh=title_zh, en=title_en)
    detail = reverse("admin:alerts_alertevent_change", args=[event.pk])
    both(pages, detail, zh=title_zh, en=title_en)
    both(pages, detail, zh=body_zh, en=body_en)
    both(pages, reverse("admin:index"), zh=title_zh, en=title_en)
    both(pages, reverse("admin:index"), zh=body_zh, en=body_en)


# --- Rows written before the codes were kept -------------------------------------------------


def test_rows_written_before_the_codes_show_their_text_as_stored(pages):
    now = timezone.now()
    run = ReplenishmentRun.objects.create(
        trigger=RunTrigger.WEBHOOK,
        status=RunStatus.ABANDONED,
        finished_at=now,
        need_explained="ceil((10 + 5 - 3) / 5) = 3 → 3 (old row)",
        error="The worker stopped before the run finished. (old row)",
    )
    WebhookEvent.objects.create(
        status=EventStatus.REFUSED, key_ok=False, refusal="Missing or wrong X-API-Key. (old row)"
    )
    account = AccountFactory(last_error="Recovered after its lease expired. (old row)")
    ImportAttempt.objects.create(
        account=account, run=run, outcome="unknown", error="timeout (old row)"
    )
    FollowUpRound.objects.create(status=RoundStatus.FAILED, error="RuntimeError() (old row)")
    AlertEvent.objects.create(
        kind="test",
        title="Spare-account pool: test notification (old row)",
        message="Test notification sent by admin (old row)",
        delivery="sent",
    )
    for url, text in (
        (reverse("admin:webhooks_replenishmentrun_change", args=[run.pk]), run.error),
        (reverse("admin:webhooks_replenishmentrun_change", args=[run.pk]), run.need_explained),
        (reverse("admin:webhooks_replenishmentrun_changelist"), "The worker stopped before"),
        (reverse("admin:webhooks_webhookevent_changelist"), "Missing or wrong X-API-Key. (old"),
        (reverse("admin:webhooks_importattempt_changelist"), "timeout (old row)"),
        (reverse("admin:accounts_account_change", args=[account.pk]), account.last_error),
        (reverse("admin:webhooks_followupround_changelist"), "RuntimeError() (old row)"),
        (reverse("admin:alerts_alertevent_changelist"), "test notification (old row)"),
    ):
        assert text in pages(url, "zh-hans"), (url, text)


# --- Notifications ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("language", "title"),
    [("zh-hans", "账号池：测试通知"), ("en", "Spare-account pool: test notification")],
)
def test_a_notification_goes_out_in_notify_language_from_the_code(
    settings, admin_user, language, title
):
    settings.NOTIFY_ALLOW_PRIVATE_HOSTS = True  # the receiver is on loopback
    settings.NOTIFY_LANGUAGE = language
    with Receiver() as receiver:
        settings.NOTIFY_URLS = [receiver.url()]
        # Raised in the other language: the stored English text is not what goes out, the code is.
        with translation.override("en" if language == "zh-hans" else "zh-hans"):
            event = alert_send_test(by=admin_user)
    assert event.title == "Spare-account pool: test notification"
    assert event.title_msg == {"code": "alert.title.test"}
    assert receiver.titles == [title]
    assert admin_user.get_username() in receiver.posts[0]["body"]


# --- The rendering itself ---------------------------------------------------------------------


message_define("tests.outer", "outer %(inner)s and %(n)s")
message_define("tests.inner", "No event pending")


def test_a_message_renders_its_nested_messages_and_falls_back_to_its_text():
    text, data = message_store("tests.outer", inner=message_store("need.no_event"), n=3)
    assert text == "outer no event pending: re-sending unknown outcomes only and 3"
    with translation.override("zh-hans"):
        assert message_render(data, text) == (
            "outer 没有待处理的事件：只重新发送结果未知的账号 and 3"
        )
        # An unknown code (a row from a later version, a removed message): the stored text.
        assert message_render({"code": "gone.code"}, "as stored") == "as stored"
        nested_unknown = {"code": "tests.outer", "params": {"inner": {"code": "gone"}, "n": 1}}
        assert message_render(nested_unknown, "as stored") == "as stored"
        assert message_render(None, "as stored") == "as stored"
