"""Cleaning text that comes from outside (a manager's answer, an exception, a request body)
before it is kept or shown: the one place for it."""

from __future__ import annotations

import re
from functools import lru_cache

from django.core.signals import setting_changed
from django.dispatch import receiver

# Anything that could be a secret: JWT/JWE-shaped text, refresh tokens, long base64url runs
# (opaque refresh tokens, session-token fragments). UUIDs and emails are left readable.
_SECRET_TEXT_RE = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)*|rt[_-][A-Za-z0-9_.-]{8,}|[A-Za-z0-9_-]{40,}"
)
REDACTED = "[redacted]"


@lru_cache(maxsize=1)
def _redaction_re() -> re.Pattern:
    """_SECRET_TEXT_RE, preceded by the values of the settings named in REDACTED_SETTINGS.

    Built once: settings do not change while a process runs (tests change them, and the
    setting_changed receiver below starts again).
    """
    from django.conf import settings

    found = set()
    for name in getattr(settings, "REDACTED_SETTINGS", ()):
        value = getattr(settings, name, "")
        # As set, stripped, and escaped the way repr() writes it (an exception's repr).
        if isinstance(value, str) and len(value.strip()) >= 4:
            found.update((value, value.strip(), repr(value)[1:-1], ascii(value)[1:-1]))
    if not found:
        return _SECRET_TEXT_RE
    # Longest first, so a whole value goes before a shorter variant of it; one pass over the text.
    exact = "|".join(re.escape(v) for v in sorted(found, key=len, reverse=True))
    return re.compile(f"{exact}|{_SECRET_TEXT_RE.pattern}")


@receiver(setting_changed)
def _reset_redaction(**kwargs):
    _redaction_re.cache_clear()


def redact(text: str) -> str:
    """Text from outside (a manager's answer, an exception) with token-shaped parts removed, and
    the values of the secret settings named in REDACTED_SETTINGS (the manager's API key)."""
    return _redaction_re().sub(REDACTED, text)


def text_storable(text, *, limit: int | None = None) -> str:
    """Outside text as it may be kept in history: nothing token-shaped (redact), no NUL
    (PostgreSQL's text type refuses it), and at most `limit` characters."""
    cleaned = redact(str(text or "")).replace("\x00", "\ufffd")
    return cleaned if limit is None else cleaned[:limit]


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell_safe(text: str) -> str:
    """Text for a CSV cell as a spreadsheet shows it, never as a formula it runs."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
