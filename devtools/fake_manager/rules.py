"""How the seat manager reads tokens, emails and batch lines: the fake manager's own small rules.

Written from the manager's observed behaviour (docs/MANAGER.md), not from this project's parser:
nothing here imports the product, so a misreading by the product (accounts/tokens.py) is not
shared by the fake that tests it. Keep these rules as plain as the manager's: a shape test per
kind of part, and an unverified read of the access token's payload.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import NamedTuple

# The manager's own patterns (its batch fallback uses the same ones on a whole line).
EMAIL_PATTERN = r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}"
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_EMAIL_RE = re.compile(EMAIL_PATTERN)
_UUID_RE = re.compile(UUID_PATTERN)
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
PROFILE_CLAIM = "https://api.openai.com/profile"


def _b64url_parts(token: str, count: int) -> list[str] | None:
    if not token.startswith("eyJ"):  # base64url of '{"': every JOSE header starts so
        return None
    parts = token.split(".")
    if len(parts) != count:
        return None
    return parts


def looks_like_jwt(part: str) -> bool:
    """A JWT: ``eyJ…`` and three dot-separated, non-empty base64url pieces."""
    parts = _b64url_parts(part, 3)
    return parts is not None and all(_B64URL_RE.fullmatch(p) for p in parts)


def looks_like_jwe(part: str) -> bool:
    """The session-token cookie: ``eyJ…`` and five pieces, the second (the key) empty."""
    parts = _b64url_parts(part, 5)
    return (
        parts is not None
        and parts[1] == ""
        and all(_B64URL_RE.fullmatch(p) for i, p in enumerate(parts) if i != 1)
    )


def looks_like_email(part: str) -> bool:
    return _EMAIL_RE.fullmatch(part) is not None


def looks_like_uuid(part: str) -> bool:
    return _UUID_RE.fullmatch(part) is not None


def looks_like_refresh_token(part: str) -> bool:
    """``rt_…`` or ``rt-…``, one word (an ``rt_x@example.com`` part is an email, read first)."""
    return part[:3] in ("rt_", "rt-") and len(part) > 3 and not any(c.isspace() for c in part)


def looks_like_client_id(part: str) -> bool:
    return part.startswith("app_") and len(part) > 4 and not any(c.isspace() for c in part)


class Claims(NamedTuple):
    email: str | None  # the profile claim's email, lower case
    expires_at: datetime | None  # from ``exp``, seconds since the epoch, UTC


def read_claims(access_token: str) -> Claims | None:
    """The access token's email and expiry, read without checking the signature; None when the
    token cannot be read (not a JWT, payload not base64url JSON, ``exp`` not a number)."""
    if not looks_like_jwt(access_token):
        return None
    payload_b64 = access_token.split(".")[1]
    try:
        raw = base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    email = None
    profile = payload.get(PROFILE_CLAIM)
    if isinstance(profile, dict) and isinstance(profile.get("email"), str):
        email = profile["email"].strip().lower() or None
    expires_at = None
    exp = payload.get("exp")
    if exp is not None:
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            return None
        try:
            expires_at = datetime.fromtimestamp(exp, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return Claims(email, expires_at)


def masked(value: str) -> str:
    """How the fake shows a secret in its own record: an ellipsis and the last 4 characters."""
    if not value:
        return ""
    return "…" if len(value) <= 4 else "…" + value[-4:]
