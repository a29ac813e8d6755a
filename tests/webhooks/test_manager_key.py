"""A MANAGER_API_KEY that cannot be an HTTP header is refused at start, never sent, and never
quoted: not in a run's error, its history, the logs or any stored text."""

import logging
import sys

import pytest

from alerts.models import AlertEvent
from poolsite.log_filters import RedactSecrets
from poolsite.text import REDACTED, redact
from tests.factories import AccountFactory
from webhooks import services
from webhooks.checks import manager_key_check
from webhooks.models import (
    ImportAttempt,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    WebhookEvent,
)

BAD_KEYS = {
    "not latin-1": "mk_密钥ключ-0123456789",
    "leading space": " mk_0123456789abcdef",
    "trailing newline": "mk_0123456789abcdef\n",
    "control character": "mk_0123\x01456789abcdef",
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_manage_py_check_refuses_a_key_that_cannot_be_a_header(settings, key):
    settings.MANAGER_API_KEY = key
    (error,) = manager_key_check(None)
    assert error.id == "webhooks.E002" and "MANAGER_API_KEY" in error.msg
    assert key.strip() not in error.msg


def test_manage_py_check_takes_a_good_key_or_none(settings):
    for key in ("", "mk_0123456789abcdef", "clé-latin-1"):
        settings.MANAGER_API_KEY = key
        assert manager_key_check(None) == []


def _everything_stored_and_logged(caplog) -> str:
    texts = [caplog.text]
    for run in ReplenishmentRun.objects.all():
        texts += [run.error, run.need_explained]
    for attempt in ImportAttempt.objects.all():
        texts += [attempt.manager_message, attempt.error]
    for alert in AlertEvent.objects.all():
        texts += [alert.title, alert.message, alert.error]
    return "\n".join(texts)


@pytest.mark.django_db
@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_a_run_with_such_a_key_stops_on_a_configuration_error_and_never_quotes_the_key(
    manager, settings, caplog, django_capture_on_commit_callbacks, key
):
    settings.MANAGER_API_KEY = key
    accounts = AccountFactory.create_batch(2)
    run = services.run_wake(trigger=RunTrigger.MANUAL, requested_accounts=2)
    with caplog.at_level(logging.INFO), django_capture_on_commit_callbacks(execute=True):
        run = services.run_execute(run_id=run.pk)

    assert run.status == RunStatus.CONFIG_ERROR and "MANAGER_API_KEY" in run.error
    assert manager.requests == []  # nothing left the process
    assert {a.status for a in type(accounts[0]).objects.all()} == {"available"}
    assert AlertEvent.objects.filter(
        condition="config_error"
    ).exists()  # the alert went out, key-free
    seen = _everything_stored_and_logged(caplog)
    assert key.strip() not in seen and repr(key)[1:-1] not in seen


def test_redaction_removes_the_configured_key_as_it_removes_tokens(settings):
    settings.MANAGER_API_KEY = "mk_short-key!"  # not token-shaped: only the setting finds it
    assert (
        redact("the manager said: bad key mk_short-key! for you")
        == f"the manager said: bad key {REDACTED} for you"
    )
    settings.MANAGER_API_KEY = "mk_ключ\x01"
    assert "ключ" not in redact(repr(ValueError(settings.MANAGER_API_KEY)))


@pytest.mark.django_db
def test_text_the_webhook_stores_has_the_key_redacted(settings):
    settings.MANAGER_API_KEY = "mk_short-key!"
    accepted = services.event_receive(
        current_seats=1,
        threshold=5,
        message="key mk_short-key!",
        payload='{"k": "mk_short-key!"}',
        remote_addr=None,
    )
    event = WebhookEvent.objects.get(pk=accepted.pk)
    assert "mk_short-key!" not in event.message + event.payload


def test_log_records_and_tracebacks_have_the_key_redacted(settings):
    settings.MANAGER_API_KEY = "mk_short-key!"
    try:
        raise ValueError("header value mk_short-key! refused")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "sent %s", ("mk_short-key!",), sys.exc_info()
        )
    assert RedactSecrets().filter(record)
    formatted = logging.Formatter().format(record)
    assert "mk_short-key!" not in formatted and "refused" in formatted
