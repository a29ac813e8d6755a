"""Real-browser tests: Debian's chromium driven by Playwright against a live server.

An admin runs the operation from the browser alone: log in, load accounts (paste → preview →
confirm), see the numbers, a webhook turns into an import found in the history, switch to 简体中文.
Screenshots of each page go to tests/artifacts/ (ignored by git) for a person to look at.
"""

import os
import re
from pathlib import Path

import pytest
import requests

from devtools import fakes
from tests.support.manager import MANAGER_KEY

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

# Playwright's sync API keeps an event loop in this thread; the ORM calls made here between
# browser steps are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


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


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def work_on_loads():
    """What the background worker does with the loads waiting for it (here, this process)."""
    from accounts.models import BATCH_RUNNING_STATUSES, AccountBatch
    from accounts.services import account_batch_process

    for pk in AccountBatch.objects.filter(status__in=BATCH_RUNNING_STATUSES).values_list(
        "pk", flat=True
    ):
        account_batch_process(batch_id=pk)


def log_in(page, live_server, django_user_model):
    django_user_model.objects.create_superuser("boss", "boss@example.com", "a-long-test-password")
    page.goto(f"{live_server.url}/admin/login/")
    shot(page, "01-login")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")


def test_an_admin_runs_the_operation_from_the_browser(
    page, live_server, django_user_model, manager, settings
):
    from accounts.models import Account, AccountStatus
    from webhooks import services
    from webhooks.models import ReplenishmentRun, RunStatus

    log_in(page, live_server, django_user_model)
    shot(page, "02-dashboard")

    accounts = [fakes.make_account() for _ in range(3)]
    text = (
        "\n".join(fakes.render_line(a, "delimited-dash") for a in accounts)
        + "\nnot an account line\n"
    )
    page.goto(f"{live_server.url}/admin/accounts/account/load/")
    page.fill("#id_text", text)
    page.fill("#id_label", "from the browser")
    shot(page, "03-load")
    page.click("input[name=_preview]")
    # The worker reads the upload; the page shows its progress until the preview is ready.
    page.wait_for_selector("#load-progress")
    assert page.locator("#confirm-form input[name=confirm]").is_disabled()
    shot(page, "04a-reading")
    work_on_loads()
    page.wait_for_selector("#load-preview")  # the page polled, saw the preview ready, and showed it
    shot(page, "04-preview")
    assert page.locator("tr.outcome-created").count() == 3
    assert page.locator("tr.outcome-invalid").count() == 1
    assert Account.objects.count() == 0  # nothing saved before confirming
    html = page.content()
    assert accounts[0]["session_token"][-30:-4] not in html  # only masked

    page.click("#confirm-form input[name=confirm]")
    page.wait_for_selector("#load-progress")
    work_on_loads()
    page.wait_for_selector("#load-preview")
    shot(page, "05-loaded")
    assert page.inner_text("#count-created strong") == "3"
    assert Account.objects.filter(status=AccountStatus.AVAILABLE).count() == 3

    page.goto(f"{live_server.url}/admin/accounts/account/")
    assert page.inner_text('[data-status="available"]') == "3"
    shot(page, "06-pool")
    page.goto(f"{live_server.url}/admin/")
    assert page.inner_text('[data-figure="available_usable"]') == "3"
    assert page.inner_text('[data-figure="seats_in_stock"]') == "15"
    page.wait_for_selector('#manager-status[data-state="ok"]')  # probed after the page loaded
    shot(page, "06b-dashboard-loaded")

    # The manager calls the webhook; a worker carries out the run (here, this process).
    response = requests.post(
        f"{live_server.url}/webhooks/low-stock/",
        json={
            "event": "low_stock",
            "current_seats": 10,
            "threshold": 10,
            "message": "库存不足预警",
        },
        headers={"X-API-Key": MANAGER_KEY},
        timeout=10,
    )
    assert response.status_code == 202
    services.run_execute(run_id=ReplenishmentRun.objects.get(status=RunStatus.QUEUED).pk)
    consumed = Account.objects.get(status=AccountStatus.CONSUMED)
    assert len(manager.imported) == 1

    page.goto(f"{live_server.url}/admin/webhooks/importattempt/")
    page.fill("#searchbar", consumed.email[:8])
    page.press("#searchbar", "Enter")
    page.wait_for_selector("#result_list")
    shot(page, "07-history")
    assert consumed.email in page.inner_text("#result_list")

    # Export what the list shows: streamed CSV, the account there, none of its secrets.
    with page.expect_download() as download:
        page.click("#export-filtered")
    csv_text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    assert consumed.email in csv_text
    for secret in (consumed.access_token, consumed.session_token, consumed.refresh_token):
        assert secret[-16:] not in csv_text

    page.goto(f"{live_server.url}/admin/")
    assert page.inner_text('[data-figure="available_usable"]') == "2"
    assert page.inner_text('[data-state-count="consumed"]') == "1"
    shot(page, "07b-dashboard-after-import")

    # Switch the whole console to Simplified Chinese.
    page.select_option("#language-select", "zh-hans")
    page.wait_for_load_state("load")
    shot(page, "08-zh-hans")
    assert re.search("可用|账号", page.content())
    page.goto(f"{live_server.url}/admin/accounts/account/load/")
    assert "加载账号" in page.content()
    shot(page, "09-load-zh-hans")
