"""Every page of the console, asked for in 简体中文, shows none of the product's English messages.

For each message of our catalogue (locale/zh_Hans) whose translation differs from it, every product
page is rendered for a staff member whose browser asks for zh-hans, with data on every page, and
its visible text (tags, scripts and styles stripped; button labels kept) must not contain the
English. A message found there was left out of the catalogue, not marked for translation, or
rendered outside the request's language.

Which messages are looked for, and why (MessagesToFind):
- Only the literal pieces between placeholders (%(n)s, %s, {{ name }} in templates), HTML tags
  taken out; a piece counts if it holds at least two words. A single word ("status", "Save",
  "email") also occurs in data (emails, supplier names, masked tokens) and in words the Chinese
  keeps on purpose (JWT, Token, CSV, API), so looking for it would fail on correct pages.
- Not a piece that a translation itself contains: "Access Token", "X-API-Key" or
  "manage.py load_accounts" stay in English inside the Chinese text on purpose.
- Matched case-sensitively and as whole words, so "access token" is not found in
  "Access Token" and "Pool" is not found in "Pooling".
Stored texts (a run's error, the explanation of its need, why a call was refused, an attempt's
error, an account's last error, a round's error, an alert's title and body) are kept with their
message code and rendered in the reader's language (poolsite.messages): the data here has each of
them, written by the service that writes it in production, so they are judged too.
"""

import html
import re
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from devtools import fakes
from tests.factories import AccountFactory
from tests.support.catalogue import _PLACEHOLDER_RE, PO_PATH, parse_po, split_header

pytestmark = pytest.mark.django_db

# Where one text block ends and the next begins: text on either side is never one sentence.
BLOCK_TAGS = {
    "p", "div", "td", "th", "tr", "li", "ul", "ol", "table", "thead", "tbody", "caption",
    "h1", "h2", "h3", "h4", "h5", "h6", "br", "option", "select", "label", "dt", "dd", "dl",
    "form", "fieldset", "legend", "section", "header", "footer", "nav", "main", "aside",
    "button", "a", "strong", "span", "code", "input", "textarea", "title",
}  # fmt: skip
INVISIBLE_TAGS = {"script", "style", "template", "noscript"}
WORD_RE = re.compile(r"[A-Za-z][A-Za-z'’-]*")
TAG_RE = re.compile(r"<[^>]+>")


class VisibleText(HTMLParser):
    """The text a reader sees: text nodes outside scripts and styles, and button labels."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in INVISIBLE_TAGS:
            self.hidden += 1
        if tag in BLOCK_TAGS:
            self.parts.append("\n")
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") in ("submit", "button") and attrs.get("value"):
            self.parts.append(f"\n{attrs['value']}\n")

    def handle_endtag(self, tag):
        if tag in INVISIBLE_TAGS:
            self.hidden = max(0, self.hidden - 1)
        if tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def visible_text(page: str) -> str:
    parser = VisibleText()
    parser.feed(page)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return "\n".join(line for line in lines if line)


def pieces(msgid: str) -> list[str]:
    """The literal pieces of a message a page would show, placeholders and tags taken out."""
    text = html.unescape(TAG_RE.sub(" ", msgid))
    text = re.sub(r"\{\{.*?\}\}", "\x00", text)
    return [" ".join(piece.split()) for piece in _PLACEHOLDER_RE.split(text) if piece]


def messages_to_find() -> dict[str, str]:
    """piece → the msgid it comes from, for every piece worth looking for (module docstring)."""
    _, entries = split_header(parse_po(PO_PATH))
    translations = [text for entry in entries for text in entry.msgstr.values()]
    found = {}
    for entry in entries:
        for msgid in filter(None, (entry.msgid, entry.msgid_plural)):
            if all(text == msgid for text in entry.msgstr.values()):
                continue  # the same in both languages
            for piece in pieces(msgid):
                piece = piece.strip(" ,.;:—–-()“”\"'…")
                if len(WORD_RE.findall(piece)) < 2:
                    continue
                if any(piece in text for text in translations):
                    continue  # kept in English by a translation, on purpose
                found.setdefault(piece, msgid)
    return found


# Two or more words of Latin letters in a row: an English phrase, wherever it comes from.
PHRASE_RE = re.compile(r"[A-Za-z][A-Za-z'’]+(?: [A-Za-z][A-Za-z'’]+)+")


def phrases_kept_in_english() -> list[str]:
    """What our translations write in English on purpose (Access Token, API Key, Team ID…)."""
    _, entries = split_header(parse_po(PO_PATH))
    return [text for entry in entries for text in entry.msgstr.values()]


def english_phrases(text: str, kept: list[str]) -> list[str]:
    """English phrases on a Chinese page that no translation of ours writes on purpose: Django's
    or a third-party app's messages missing from every catalogue, or text never translated."""
    return sorted(
        {phrase for phrase in PHRASE_RE.findall(text) if not any(phrase in t for t in kept)}
    )


def english_on(text: str, messages: dict[str, str]) -> list[str]:
    return sorted(
        msgid
        for piece, msgid in messages.items()
        if re.search(r"(?<![A-Za-z])" + re.escape(piece) + r"(?![A-Za-z])", text)
    )


def test_the_detector_finds_english_and_passes_chinese():
    messages = messages_to_find()
    assert len(messages) > 200, "suspiciously few messages to look for"
    page = (
        "<p>Nothing is saved yet: the worker reads the upload in the background, the next page "
        "shows its progress and then how every line was read, and you confirm there.</p>"
        "<script>Load accounts</script>"
    )
    assert english_on(visible_text(page), messages), "an English sentence must be found"
    assert "Load accounts" not in visible_text(page)  # a script is not text
    assert english_on(visible_text('<input type="submit" value="Run again">'), messages)
    assert not english_on(visible_text("<p>加载账号</p><code>Access Token</code>"), messages)


def stored_texts(settings, client) -> dict:
    """Every kind of stored text, written by its service: a run the manager refused (its error and
    its need), a run whose worker died (its error, its account's attempt and last error), refused
    webhook calls, a follow-up round without a manager, and the alerts these raise."""
    from datetime import timedelta

    from accounts.models import AccountStatus
    from alerts.evaluation import alert_evaluate
    from alerts.models import AlertEvent
    from webhooks import follow_up, services
    from webhooks.models import (
        FollowUpRound,
        ImportAttempt,
        ReplenishmentRun,
        RoundStatus,
        RunStatus,
        RunTrigger,
        WebhookEvent,
    )

    right_key = settings.MANAGER_API_KEY
    settings.MANAGER_API_KEY = "a-key-the-manager-does-not-know"
    services.event_receive(current_seats=3, threshold=10, message="", payload="", remote_addr=None)
    refused = services.run_execute(run_id=ReplenishmentRun.objects.get(status=RunStatus.QUEUED).pk)
    assert refused.status == RunStatus.CONFIG_ERROR and refused.need_explained
    settings.MANAGER_API_KEY = right_key

    past = timezone.now() - timedelta(minutes=5)
    abandoned = ReplenishmentRun.objects.create(
        trigger=RunTrigger.MANUAL, status=RunStatus.RUNNING, started_at=past, lease_expires_at=past
    )
    recovered = AccountFactory(
        status=AccountStatus.RESERVED, lease_id=abandoned.lease_id, lease_expires_at=past
    )
    assert services.run_recover_stale(now=timezone.now()) == (1, 1)

    for key, body in (("wrong", "{}"), (right_key, '{"event": "low_stock", "current_seats": -1}')):
        client.post(
            "/webhooks/low-stock/",
            data=body,
            content_type="application/json",
            headers={"X-API-Key": key},
        )
    assert WebhookEvent.objects.exclude(refusal="").count() == 2

    base_url, settings.MANAGER_BASE_URL = settings.MANAGER_BASE_URL, ""
    round_ = FollowUpRound.objects.create(status=RoundStatus.QUEUED)
    assert follow_up.team_round_run(round_id=round_.pk).stopped
    settings.MANAGER_BASE_URL = base_url

    alert_evaluate(now=timezone.now())
    assert AlertEvent.objects.filter(condition="config_error").exists()
    return {
        "refused_run": refused.pk,
        "abandoned_run": abandoned.pk,
        "recovered": recovered.pk,
        "attempt": ImportAttempt.objects.get(account=recovered).pk,
        "refused_event": WebhookEvent.objects.exclude(refusal="").first().pk,
        "alert": AlertEvent.objects.get(condition="config_error").pk,
    }


def a_console_with_data(admin_user, worker):
    """Every page with something on it: accounts of each state, a loaded batch and a staged one
    with a problem of each kind, events, runs, attempts, alerts, a destination, followed Teams."""
    from accounts import services as account_services
    from accounts.models import AccountStatus, UnusableReason
    from alerts.models import AlertSettings, NotificationTarget
    from webhooks.models import (
        AttemptOutcome,
        EventStatus,
        FollowedTeam,
        FollowUpRound,
        ImportAttempt,
        ImportMode,
        ReplenishmentPolicy,
        ReplenishmentRun,
        RunStatus,
        RunTrigger,
        TeamStatus,
        WebhookEvent,
    )

    now = timezone.now()
    accounts = [AccountFactory() for _ in range(3)]
    AccountFactory(usable=False, unusable_reason=UnusableReason.AT_EXPIRED)
    AccountFactory(usable=False, unusable_reason=UnusableReason.UNKNOWN_OUTCOMES)
    rejected = AccountFactory(status=AccountStatus.REJECTED)
    consumed = AccountFactory(status=AccountStatus.CONSUMED, consumed_at=now)
    AccountFactory(status=AccountStatus.RETIRED)

    valid = [fakes.make_account() for _ in range(3)]
    expiring = fakes.make_account(session_token=None, refresh_token=None, client_id=None)
    lines = [
        *(fakes.render_line(account, "delimited-dash") for account in valid),
        "Bought on Friday from the usual supplier, see the notes",
        f"{valid[0]['email']}----not-a-token----more",
        fakes.render_line(valid[1], "positional"),  # a duplicate of line 2
        f"{accounts[0].email}----{accounts[0].access_token}",  # already in the pool
        fakes.render_line(expiring, "positional"),
    ]
    staged = account_services.account_batch_stage(
        content="\n".join(lines),
        label="bad.txt",
        supplier="老王",
        filename="bad.txt",
        user=admin_user,
        language="zh-hans",
    )
    worker()
    loaded = account_services.account_batch_stage(
        content=fakes.render_line(fakes.make_account(), "positional"),
        label="",
        filename="",
        user=admin_user,
        language="zh-hans",
        confirmed=True,
    )
    worker()
    loaded.refresh_from_db()
    loaded.label = f"{timezone.localtime(loaded.created_at):%Y-%m-%d %H:%M}"
    loaded.save(update_fields=["label"])

    run = ReplenishmentRun.objects.create(
        trigger=RunTrigger.WEBHOOK,
        status=RunStatus.FINISHED,
        need=2,
        reserved=2,
        consumed=1,
        rejected=1,
        started_at=now,
        finished_at=now,
    )
    WebhookEvent.objects.create(
        status=EventStatus.ACTED_ON, key_ok=True, current_seats=3, threshold=10, run=run
    )
    for account, outcome in ((consumed, AttemptOutcome.CONSUMED), (rejected, "rejected")):
        ImportAttempt.objects.create(
            account=account,
            run=run,
            mode=ImportMode.SINGLE,
            sent=True,
            outcome=outcome,
            http_status=200 if outcome == AttemptOutcome.CONSUMED else 400,
            manager_message="成功导入 1 个 Team 账号"
            if outcome == AttemptOutcome.CONSUMED
            else "共发现 1 个 Team 账号,但均已在系统中",
            duration_ms=1200,
        )
    ReplenishmentPolicy.objects.get_or_create(pk=1)
    AlertSettings.objects.get_or_create(pk=1)
    NotificationTarget.objects.create(
        label="运维群", url="tgram://123456:ABCDEF/987654", masked_url="tgram://…7654"
    )
    FollowedTeam.objects.create(
        account=consumed,
        team_id=42,
        imported_at=now,
        status=TeamStatus.ACTIVE,
        status_since=now,
        checked_at=now,
    )
    FollowUpRound.objects.create(status="finished", asked=1, started_at=now, finished_at=now)
    return {
        "account": accounts[0].pk,
        "rejected": rejected.pk,
        "run": run.pk,
        "staged": staged.pk,
        "loaded": loaded.pk,
    }


def product_pages(ids) -> dict[str, str]:
    return {
        "home (dashboard)": reverse("admin:index"),
        "pool": reverse("admin:accounts_account_changelist"),
        "pool, held for staff": reverse("admin:accounts_account_changelist") + "?stock=held",
        "account": reverse("admin:accounts_account_change", args=[ids["account"]]),
        "requeue": reverse("admin:accounts_account_requeue", args=[ids["rejected"]]),
        "load": reverse("admin:accounts_account_load"),
        "preview of a staged batch": reverse(
            "admin:accounts_account_load_preview", args=[ids["staged"]]
        ),
        "a loaded batch": reverse("admin:accounts_account_load_preview", args=[ids["loaded"]]),
        "batches": reverse("admin:accounts_accountbatch_changelist"),
        "batch": reverse("admin:accounts_accountbatch_change", args=[ids["staged"]]),
        "events": reverse("admin:webhooks_webhookevent_changelist"),
        "runs": reverse("admin:webhooks_replenishmentrun_changelist"),
        "run": reverse("admin:webhooks_replenishmentrun_change", args=[ids["run"]]),
        "push": reverse("admin:webhooks_replenishmentrun_push"),
        "attempts": reverse("admin:webhooks_importattempt_changelist"),
        "attempts export": reverse("admin:webhooks_importattempt_export"),
        "policy": reverse("admin:webhooks_replenishmentpolicy_change", args=[1]),
        "alert settings": reverse("admin:alerts_alertsettings_change", args=[1]),
        "destinations": reverse("admin:alerts_notificationtarget_changelist"),
        "followed teams": reverse("admin:webhooks_followedteam_changelist"),
        "follow-up rounds": reverse("admin:webhooks_followupround_changelist"),
        "pool section": reverse("admin:app_list", args=["accounts"]),
        "system section": reverse("admin:system"),
        "alerts": reverse("admin:alerts_alertevent_changelist"),
        "alert states": reverse("admin:alerts_alertstate_changelist"),
        **stored_text_pages(ids),
    }


def stored_text_pages(ids) -> dict[str, str]:
    """The detail pages of the rows with stored texts (stored_texts); the lists are above."""
    if "refused_run" not in ids:
        return {}
    return {
        "run refused by the manager": reverse(
            "admin:webhooks_replenishmentrun_change", args=[ids["refused_run"]]
        ),
        "run whose worker died": reverse(
            "admin:webhooks_replenishmentrun_change", args=[ids["abandoned_run"]]
        ),
        "account recovered from a lease": reverse(
            "admin:accounts_account_change", args=[ids["recovered"]]
        ),
        "attempt recovered from a lease": reverse(
            "admin:webhooks_importattempt_change", args=[ids["attempt"]]
        ),
        "refused call": reverse("admin:webhooks_webhookevent_change", args=[ids["refused_event"]]),
        "alert": reverse("admin:alerts_alertevent_change", args=[ids["alert"]]),
    }


def system_pages() -> dict[str, str]:
    """The System section's lists: Django's and third-party apps' pages, in our language too."""
    return {
        "API tokens": reverse("admin:apitokens_apitoken_changelist"),
        "users": reverse("admin:auth_user_changelist"),
        "groups": reverse("admin:auth_group_changelist"),
        "login attempts": reverse("admin:axes_accessattempt_changelist"),
        "login log": reverse("admin:axes_accesslog_changelist"),
        "login failures": reverse("admin:axes_accessfailurelog_changelist"),
        "task results": reverse("admin:django_tasks_database_dbtaskresult_changelist"),
    }


def test_every_product_page_in_chinese_shows_none_of_our_english(
    admin_client, admin_user, worker, manager, settings
):
    ids = a_console_with_data(admin_user, worker)
    ids.update(stored_texts(settings, admin_client))
    messages, kept = messages_to_find(), phrases_kept_in_english()
    found, phrases = {}, {}
    for name, url in {**product_pages(ids), **system_pages()}.items():
        response = admin_client.get(url, headers={"Accept-Language": "zh-hans"})
        assert response.status_code == 200, (name, url, response.status_code)
        assert response["Content-Language"] == "zh-hans", name
        text = visible_text(response.content.decode())
        assert "账号池" in text, f"{name}: not the Chinese console"
        english = english_on(text, messages)
        if english:
            found[name] = english
        others = english_phrases(text, kept)
        if others:
            phrases[name] = others
    assert not found, "English messages on Chinese pages:\n" + "\n".join(
        f"{name}: {english}" for name, english in found.items()
    )
    # The data here is Chinese or single words (emails, masked tokens, file names): any English
    # phrase left is a page's own text that no catalogue translates.
    assert not phrases, "English phrases on Chinese pages:\n" + "\n".join(
        f"{name}: {english}" for name, english in phrases.items()
    )
