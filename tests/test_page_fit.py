"""Every page an operator uses fits the screen: no sideways scrolling on a laptop (1366×768) or a
phone (390×844), in English and in 简体中文, with long emails and long answers from the manager.

Real chromium (Playwright) against a live server; screenshots go to tests/artifacts/fit-*.png.
"""

import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Debian chromium is not installed (scripts/ensure_chromium.sh)",
    ),
]

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

VIEWPORTS = {"laptop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}
PAGES = {
    "dashboard": "/admin/",
    "pool": "/admin/accounts/account/",
    "load": "/admin/accounts/account/load/",
    # A staged upload with a problem of each kind: long reasons, long emails, masked tokens.
    "preview": "/admin/accounts/account/load/{batch}/",
    "attempts": "/admin/webhooks/importattempt/",
    "runs": "/admin/webhooks/replenishmentrun/",
    "run": "/admin/webhooks/replenishmentrun/{run}/change/",
    "events": "/admin/webhooks/webhookevent/",
    "account": "/admin/accounts/account/{account}/change/",
    "batches": "/admin/accounts/accountbatch/",
    "policy": "/admin/webhooks/replenishmentpolicy/",
    "alert-settings": "/admin/alerts/alertsettings/",
    "destinations": "/admin/alerts/notificationtarget/",
}
PASSWORD = "a-long-test-password"
# Lists whose columns are chosen to fit a 1366 px screen, the side menu open.
FULL_LISTS = ("pool", "attempts", "runs", "events")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield browser
        browser.close()


def a_busy_pool(language: str = "en"):
    """Accounts of every kind with long addresses, and attempts with long answers and errors."""
    from django.utils import timezone

    from accounts.models import AccountStatus, UnusableReason
    from tests.factories import AccountFactory
    from webhooks.models import (
        AttemptOutcome,
        EventStatus,
        ImportAttempt,
        ReplenishmentRun,
        RunStatus,
        RunTrigger,
        WebhookEvent,
    )

    now = timezone.now()
    long = "a.very.long.mailbox.name.for.testing.widths"
    accounts = [
        AccountFactory(email=f"{long}.{n}@an-exceedingly-long-domain-name.example.com")
        for n in range(6)
    ]
    AccountFactory(usable=False, unusable_reason=UnusableReason.UNKNOWN_OUTCOMES)
    AccountFactory(usable=False, unusable_reason=UnusableReason.AT_EXPIRED)
    AccountFactory(
        status=AccountStatus.RESERVED,
        lease_id=uuid.uuid4(),
        lease_expires_at=now + timedelta(minutes=5),
    )
    AccountFactory(status=AccountStatus.CONSUMED, consumed_at=now - timedelta(hours=3))
    run = ReplenishmentRun.objects.create(
        trigger=RunTrigger.WEBHOOK,
        status=RunStatus.CONFIG_ERROR,
        error="The manager refused the request (HTTP 401): check MANAGER_BASE_URL and MANAGER_API_KEY. "
        * 3,
    )
    message = (
        "账号已存在于其他团队中，请检查后重试 / account already exists in another team, check and retry "
        * 4
    )
    WebhookEvent.objects.create(
        status=EventStatus.REFUSED, key_ok=False, refusal="Missing or wrong X-API-Key. " * 5
    )
    WebhookEvent.objects.create(
        status=EventStatus.ACTED_ON, key_ok=True, current_seats=3, threshold=10, run=run
    )
    for outcome, account in zip(AttemptOutcome.values, accounts):
        ImportAttempt.objects.create(
            account=account,
            run=run,
            outcome=outcome,
            http_status=400,
            manager_message=message,
            error="ReadTimeout: HTTPSConnectionPool(host='manager.example.com', port=443): Read timed out.",
            duration_ms=30012,
        )
    return {"run": run.pk, "account": accounts[0].pk, "batch": a_staged_upload(language).pk}


def a_staged_upload(language: str):
    """An upload read by the worker and awaiting confirmation, the preview full of problems."""
    from django.contrib.auth import get_user_model

    from accounts.models import BATCH_RUNNING_STATUSES, AccountBatch
    from accounts.services import account_batch_process, account_batch_stage
    from devtools import fakes

    long = "a.very.long.mailbox.name.for.testing.widths.in.the.preview"
    good = [
        fakes.make_account(email=f"{long}.{n}@an-exceedingly-long-domain-name.example.com")
        for n in range(3)
    ]
    lines = [
        *(fakes.render_line(account, "delimited-dash") for account in good),
        "Bought on Friday from the usual supplier, see the notes for the rest of the order",
        f"{good[0]['email']}----not-a-token----another-part-that-is-not-one",
        fakes.render_line(good[1], "positional"),
    ]
    batch = account_batch_stage(
        content="\n".join(lines),
        label="bad.txt",
        filename="bad.txt",
        user=get_user_model().objects.get(username="boss"),
        language=language,  # the worker writes the reasons in the uploader's language
    )
    for pk in AccountBatch.objects.filter(status__in=BATCH_RUNNING_STATUSES).values_list(
        "pk", flat=True
    ):
        account_batch_process(batch_id=pk)
    return batch


@pytest.mark.parametrize("language", ["en", "zh-hans"])
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_the_operators_pages_fit_the_screen(
    browser, live_server, django_user_model, settings, viewport, language
):
    settings.MANAGER_BASE_URL, settings.MANAGER_API_KEY = (
        "",
        "",
    )  # the "not configured" notice shows too
    django_user_model.objects.create_superuser("boss", "boss@example.com", PASSWORD)
    ids = a_busy_pool(language)
    context = browser.new_context(
        locale="zh-CN" if language == "zh-hans" else "en-US",
        viewport=VIEWPORTS[viewport],
        extra_http_headers={"Accept-Language": language},
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "boss")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server.url}/admin/")
        too_wide = {}
        ARTIFACTS.mkdir(exist_ok=True)
        for name, path in PAGES.items():
            page.goto(f"{live_server.url}{path.format(**ids)}")
            page.wait_for_load_state("load")
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            page.screenshot(
                path=str(ARTIFACTS / f"fit-{name}-{viewport}-{language}.png"), full_page=True
            )
            if widths[0] > widths[1]:
                too_wide[name] = widths
            # On a laptop a list shows every column: its table does not scroll inside its box either.
            results = page.evaluate(
                "(() => { const r = document.querySelector('#changelist .results');"
                " return r ? [r.scrollWidth, r.clientWidth] : null; })()"
            )
            if viewport == "laptop" and name in FULL_LISTS and results and results[0] > results[1]:
                too_wide[f"{name} list"] = results
            # The preview's table too: every column of a line, its reason first, at 1366 px.
            preview = page.evaluate(
                "(() => { const r = document.querySelector('#load-results');"
                " return r ? [r.scrollWidth, r.clientWidth] : null; })()"
            )
            if viewport == "laptop" and preview and preview[0] > preview[1]:
                too_wide[f"{name} table"] = preview
        assert too_wide == {}, f"pages wider than the screen (scrollWidth, innerWidth): {too_wide}"
    finally:
        context.close()
