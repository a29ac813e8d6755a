"""Shapes and claims of the account material staff load into the pool.

Pure functions only: no models, no database, no settings read at import time.
Every message is a lazy translation, rendered in the reader's language when
shown; every problem also carries a stable code that code and tests match on.
"""

from __future__ import annotations

import binascii
import json
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

import jwt
from django.utils.functional import lazy
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

__all__ = [
    "AT_EXPIRED",
    "AT_SHORT_LIVED",
    "AccessTokenClaims",
    "JWE",
    "JWT",
    "MSG_AT_EXPIRED",
    "MSG_AT_SHORT_LIVED",
    "MSG_NO_USABLE_TOKEN",
    "MalformedToken",
    "NO_USABLE_TOKEN",
    "Problem",
    "decode_access_token",
    "interpolate",
    "is_client_id",
    "is_email",
    "is_jwe",
    "is_jwt",
    "is_refresh_token",
    "is_uuid",
    "jose_shape",
    "mask",
    "usability_problem",
]

JWT = "jwt"
JWE = "jwe"
# Checked by deleting every allowed byte and looking for leftovers: several
# times faster than a regex over a 2.5 KB token, 100,000 times per load.
_B64URL_AND_DOT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
# Deliberately narrower than RFC 5322: what the seat manager and real sign-ups
# accept, with no '|' so a pipe-delimited line cannot hide a second field.
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{}~-]+"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_EMAIL_MAX = 254
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# No '@': an address such as rt_ops@example.com is an email, not a token.
_REFRESH_TOKEN_RE = re.compile(r"rt[_-][^\s@]+")
_CLIENT_ID_RE = re.compile(r"app_[A-Za-z0-9_-]+")


def jose_shape(s: str) -> str | None:
    """JWT for a compact JWS (three non-empty base64url parts), JWE for a
    compact JWE with an empty key part (the ChatGPT session-token cookie,
    ``"alg": "dir"``), else None. Both start with "eyJ", base64url for '{"'.
    """
    if (
        not s.startswith("eyJ")
        or not s.isascii()
        or s.encode("ascii").translate(None, _B64URL_AND_DOT)
    ):
        return None
    parts = s.split(".")
    if len(parts) == 3:
        return JWT if parts[1] and parts[2] else None
    if len(parts) == 5 and not parts[1] and parts[2] and parts[3] and parts[4]:
        return JWE
    return None


def is_jwt(s: str) -> bool:
    return jose_shape(s) == JWT


def is_jwe(s: str) -> bool:
    return jose_shape(s) == JWE


def is_email(s: str) -> bool:
    return len(s) <= _EMAIL_MAX and _EMAIL_RE.fullmatch(s) is not None


def is_uuid(s: str) -> bool:
    return _UUID_RE.fullmatch(s) is not None


def is_refresh_token(s: str) -> bool:
    return _REFRESH_TOKEN_RE.fullmatch(s) is not None


def is_client_id(s: str) -> bool:
    return _CLIENT_ID_RE.fullmatch(s) is not None


def mask(secret: str | None) -> str:
    """What may be shown of a secret: an ellipsis and its last 4 characters.

    Short values are shown as the ellipsis alone, since their last 4
    characters would be all of them.
    """
    if not secret:
        return ""
    if not isinstance(secret, str):
        # A value that is not text (crypto.Undecryptable) shows as what it is, never masked.
        return str(secret)
    if len(secret) <= 4:
        return "…"
    return "…" + secret[-4:]


# A template translated once per language, not once per line: a million invalid lines spent more
# time in gettext than in reading them. The template is kept in the value, so its id is not reused.
_TRANSLATED: dict[tuple[int, str | None], tuple[Any, str]] = {}


def _interpolate(template: Any, params: dict[str, Any]) -> str:
    key = (id(template), get_language())
    cached = _TRANSLATED.get(key)
    if cached is None or cached[0] is not template:
        cached = _TRANSLATED[key] = (template, str(template))
    return cached[1] % params


# %-formatting a lazy string renders it on the spot (in whatever language is
# active, or fails without settings); this defers both to display time.
interpolate = lazy(_interpolate, str)


class Problem(NamedTuple):
    """One reason a line is invalid or worth a warning.

    ``code`` is stable (tests and code compare it); ``message`` is a lazy
    translation for people.
    """

    code: str
    message: Any

    def __str__(self) -> str:
        return str(self.message)

    def __repr__(self) -> str:
        # The code says which problem it is, and rendering the message would
        # need translation set up wherever a repr is taken (logs, test output).
        return f"Problem({self.code!r})"


# --- access-token claims ------------------------------------------------------


class MalformedToken(ValueError):
    """The access token cannot be decoded; the message never contains it."""


class AccessTokenClaims(NamedTuple):
    email: str | None
    expires_at: datetime | None


_PROFILE_CLAIM = "https://api.openai.com/profile"
_PYJWT_OPTIONS = {
    "verify_signature": False,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}
_PADDING = (b"", None, b"==", b"=")
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# Base64url text is canonical only if the bits its last character carries
# beyond the final byte are zero; PyJWT rejects the other spellings.
_CANONICAL_LAST = (None, None, frozenset("AQgw"), frozenset("AEIMQUYcgkosw048"))


def _b64_segment(segment: str, *, decode: bool) -> bytes:
    rem = len(segment) % 4
    if rem == 1 or (rem and segment[-1] not in _CANONICAL_LAST[rem]):
        raise MalformedToken("access token is not canonical base64url")
    if not decode:
        return b""
    # base64.urlsafe_b64decode does the same with more copies and checks;
    # the alphabet is known good here (jose_shape).
    return binascii.a2b_base64(
        segment.encode("ascii").translate(_URLSAFE_TO_STANDARD) + _PADDING[rem]
    )


_JSON = json.JSONDecoder()


def _json_object(data: bytes) -> dict:
    try:
        # The usual case, an object from byte 0 to the last byte, skips the
        # encoding sniffing and whitespace regexes of json.loads; the result
        # is the same, and anything else still goes through json.loads.
        if data[:1] == b"{" and data[1:2] != b"\0":
            text = data.decode("utf-8", "surrogatepass")
            value, end = _JSON.raw_decode(text)
            if end != len(text):
                value = json.loads(data)
        else:
            value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise MalformedToken("access token part is not JSON") from exc
    if not isinstance(value, dict):
        raise MalformedToken("access token part is not a JSON object")
    return value


# Tokens from one issuer share a handful of headers; reading each once saves
# a base64 and a JSON decode per token.
@lru_cache(maxsize=64)
def _plain_header(header_b64: str) -> bool:
    """True if the header is valid and PyJWT gives none of its keys a special
    meaning, False if PyJWT should judge the token; raises MalformedToken."""
    header = _json_object(_b64_segment(header_b64, decode=True))
    if "crit" in header or "b64" in header:
        return False
    if "kid" in header and not isinstance(header["kid"], str):
        raise MalformedToken("access token header has a non-string kid")
    return True


def _unverified_payload(at: str, *, shape_checked: bool) -> dict:
    """The JWT payload, accepting exactly what ``jwt.decode`` accepts unverified.

    ``jwt.decode`` checks the base64url alphabet one byte at a time in Python
    (~90 µs for a real 2 KB token, i.e. 9 s per 100,000 lines). Once
    ``jose_shape`` has vouched for the alphabet, the remaining checks are
    cheap and done here; headers to which PyJWT gives special meaning ("crit",
    "b64"), and any token not in the plain unpadded shape, are still left to
    PyJWT itself. tests/accounts/test_tokens.py holds both to the same verdicts.
    """
    if not (shape_checked or jose_shape(at) == JWT):
        return _pyjwt_payload(at)
    header_b64, payload_b64, signature_b64 = at.split(".")
    if not _plain_header(header_b64):
        return _pyjwt_payload(at)
    payload = _json_object(_b64_segment(payload_b64, decode=True))
    _b64_segment(signature_b64, decode=False)
    return payload


def _pyjwt_payload(at: str) -> dict:
    try:
        return jwt.decode(at, options=_PYJWT_OPTIONS)
    # PyJWT encodes str input to UTF-8 first, which lone surrogates fail.
    except (jwt.PyJWTError, UnicodeError) as exc:
        raise MalformedToken("access token cannot be decoded") from exc


def decode_access_token(at: str, *, shape_checked: bool = False) -> AccessTokenClaims:
    """Email and expiry of an access token, read without verifying it.

    The signature cannot be checked here (no key) and an expired token must
    still be readable, so nothing is verified; the claims are only used to
    fill a missing email, compare emails and judge expiry. ``shape_checked``
    is for callers that already matched ``is_jwt`` and should not pay twice.
    Raises MalformedToken when the token cannot be decoded or its ``exp`` is
    not a usable number of seconds.
    """
    payload = _unverified_payload(at, shape_checked=shape_checked)

    email = None
    profile = payload.get(_PROFILE_CLAIM)
    if isinstance(profile, dict):
        raw_email = profile.get("email")
        if isinstance(raw_email, str):
            email = raw_email.strip().lower() or None

    expires_at = None
    exp = payload.get("exp")
    if exp is not None:
        # bool is an int to Python, but "exp": true is not a time.
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise MalformedToken("access token exp is not a number")
        try:
            expires_at = datetime.fromtimestamp(exp, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise MalformedToken("access token exp is out of range") from exc

    return AccessTokenClaims(email, expires_at)


# --- usability ----------------------------------------------------------------

AT_EXPIRED = "at_expired"
AT_SHORT_LIVED = "at_short_lived"
NO_USABLE_TOKEN = "no_usable_token"

MSG_AT_EXPIRED = _(
    "The access token has expired and there is no session token, nor refresh "
    "token with client ID, to renew it."
)
MSG_AT_SHORT_LIVED = _(
    "The access token has less than %(hours)s hours left, which the seat "
    "manager already counts as expired, and there is no session token, nor "
    "refresh token with client ID, to renew it."
)
MSG_NO_USABLE_TOKEN = _(
    "No usable token: no session token, no refresh token with client ID, and "
    "no access token with a known expiry."
)

_AT_EXPIRED_PROBLEM = Problem(AT_EXPIRED, MSG_AT_EXPIRED)
_NO_USABLE_TOKEN_PROBLEM = Problem(NO_USABLE_TOKEN, MSG_NO_USABLE_TOKEN)


@lru_cache(maxsize=16)
def _short_lived_problem(min_at_lifetime: timedelta) -> Problem:
    # One object per threshold, so flagging 100,000 lines allocates nothing.
    hours = f"{min_at_lifetime.total_seconds() / 3600:g}"
    return Problem(AT_SHORT_LIVED, interpolate(MSG_AT_SHORT_LIVED, {"hours": hours}))


def usability_problem(
    *,
    at_expires_at: datetime | None,
    has_session_token: bool,
    has_refresh_token: bool,
    has_client_id: bool,
    now: datetime,
    min_at_lifetime: timedelta,
) -> Problem | None:
    """Why the manager could not import this account, or None if it could.

    The manager renews a missing or expired access token from the session
    token, else from refresh token + client ID; without either, only the
    access token counts, and the manager misjudges its expiry by about 8 hours
    (hence ``min_at_lifetime``). An access token whose expiry is unknown
    (``at_expires_at`` None, also when there is no access token) never counts.
    """
    if has_session_token or (has_refresh_token and has_client_id):
        return None
    if at_expires_at is None:
        return _NO_USABLE_TOKEN_PROBLEM
    left = at_expires_at - now
    if left > min_at_lifetime:
        return None
    if left <= timedelta(0):
        return _AT_EXPIRED_PROBLEM
    return _short_lived_problem(min_at_lifetime)
