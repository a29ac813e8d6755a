"""Realistic fake account material for tests and benchmarks.

The shapes and sizes match the real thing (a ~1.5 KB access-token JWT, a
~2.5 KB JWE session token, rt_/app_ prefixes), but nothing here is a real
credential: access tokens are signed with a fixed, public test key. Pass a
``random.Random`` (and ``now``) to get the same material every time.
"""

from __future__ import annotations

import base64
import csv
import io
import random
import string
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import jwt

FIELDS = ("email", "access_token", "session_token", "refresh_token", "client_id", "account_id")
LINE_FORMATS = (
    "positional",
    "delimited-dash",
    "delimited-pipe",
    "delimited-tab",
    "delimited-spaces",
)
_SEPARATORS = {
    "delimited-dash": "----",
    "delimited-pipe": "|",
    "delimited-tab": "\t",
    "delimited-spaces": "  ",
}
# The seat manager's documented order, then the optional account ID.
_POSITIONAL_ORDER = ("email", "access_token", "refresh_token", "session_token", "client_id")

SIGNING_KEY = "fake-signing-key-for-tests-only-not-a-secret-0123456789"
_KID = "b1dd3f8f-9926-4e71-bc6f-b4b5e8c0e5f4"
_JWE_HEADER = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0"  # {"alg":"dir","enc":"A256GCM"}
_ALNUM = string.ascii_letters + string.digits
_DOMAINS = ("example.com", "example.org", "mail.example.net", "team.example.io")


def _rng(rng: random.Random | None) -> random.Random:
    return rng if rng is not None else random.Random()


# Random base64url text holds "----" about once in 17 million characters: a token with it would be
# cut by the line format that joins fields with "----" (the manager's own), and a load test of
# 30,000 lines then failed now and then. The made-up tokens never hold it (docs/MANAGER.md).
BATCH_SEPARATOR = "----"


def _b64url(rng: random.Random, nbytes: int) -> str:
    while True:
        text = base64.urlsafe_b64encode(rng.randbytes(nbytes)).rstrip(b"=").decode("ascii")
        if BATCH_SEPARATOR not in text:
            return text


def _b64url_chars(rng: random.Random, nchars: int) -> str:
    return _b64url(rng, nchars * 3 // 4 + 3)[:nchars]


def _alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_ALNUM, k=n))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_email(rng: random.Random | None = None) -> str:
    rng = _rng(rng)
    local = "".join(rng.choices(string.ascii_lowercase + string.digits, k=10))
    return f"{local}@{rng.choice(_DOMAINS)}"


def make_access_token(
    *,
    email: str | None,
    expires_at: datetime | None = None,
    lifetime: timedelta = timedelta(days=10),
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> str:
    """An HS256 JWT with the claims of a ChatGPT access token.

    ``expires_at`` wins over ``now + lifetime``. ``email=None`` leaves the
    email out of the profile claim.
    """
    rng = _rng(rng)
    now = now if now is not None else datetime.now(UTC)
    if expires_at is None:
        expires_at = now + lifetime
    issued = int(now.timestamp())
    user_id = "user-" + _alnum(rng, 24)
    account_id = _uuid(rng)
    profile = {"email_verified": True}
    if email is not None:
        profile["email"] = email
    claims = {
        "aud": ["https://api.openai.com/v1"],
        "client_id": "app_" + _alnum(rng, 24),
        "exp": int(expires_at.timestamp()),
        "https://api.openai.com/auth": {
            "chatgpt_account_id": account_id,
            "chatgpt_account_user_id": f"{user_id}__{account_id}",
            "chatgpt_compute_residency": "no_constraint",
            "chatgpt_plan_type": "team",
            "chatgpt_user_id": user_id,
            "user_id": user_id,
        },
        "https://api.openai.com/profile": profile,
        "iat": issued,
        "iss": "https://auth.openai.com",
        "jti": _uuid(rng),
        "nbf": issued,
        "pwd_auth_time": issued * 1000 - rng.randrange(10**8),
        "scp": [
            "openid",
            "email",
            "profile",
            "offline_access",
            "model.request",
            "model.read",
            "organization.read",
            "organization.write",
        ],
        "session_id": "authsess_" + _alnum(rng, 24),
        "sub": "auth0|" + _alnum(rng, 24),
    }
    while True:
        token = jwt.encode(claims, SIGNING_KEY, algorithm="HS256", headers={"kid": _KID})
        if BATCH_SEPARATOR not in token:
            return token
        claims["jti"] = _uuid(rng)  # another signature


def make_session_token(size: int = 2500, rng: random.Random | None = None) -> str:
    """A JWE-shaped session-token cookie of ``size`` characters (at least ~80)."""
    rng = _rng(rng)
    iv = _b64url(rng, 12)
    tag = _b64url(rng, 16)
    fixed = len(_JWE_HEADER) + len(iv) + len(tag) + 4  # the four dots
    ciphertext = _b64url_chars(rng, max(size - fixed, 1))
    return f"{_JWE_HEADER}..{iv}.{ciphertext}.{tag}"


def make_refresh_token(rng: random.Random | None = None) -> str:
    return "rt_" + _b64url(_rng(rng), 48)


def make_client_id(rng: random.Random | None = None) -> str:
    return "app_" + _alnum(_rng(rng), 24)


def make_account(
    *,
    rng: random.Random | None = None,
    now: datetime | None = None,
    lifetime: timedelta = timedelta(days=10),
    **overrides: str | None,
) -> dict:
    """The six fields of one account, all filled unless overridden.

    Override a field with None to leave it out. The access token carries the
    account's email (a generated one when ``email=None``).
    """
    unknown = set(overrides) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown account fields: {sorted(unknown)}")
    rng = _rng(rng)
    email = overrides.get("email") or make_email(rng)
    account = {
        "email": email,
        "session_token": make_session_token(rng=rng),
        "refresh_token": make_refresh_token(rng),
        "client_id": make_client_id(rng),
        "account_id": _uuid(rng),
    }
    if "access_token" not in overrides:
        account["access_token"] = make_access_token(
            email=email, lifetime=lifetime, now=now, rng=rng
        )
    account.update(overrides)
    return {name: account[name] for name in FIELDS}


def render_line(account: dict, fmt: str) -> str:
    """One line (without line end) in one of LINE_FORMATS; None/"" are left out."""
    if fmt == "positional":
        places = [account.get(name) or "" for name in _POSITIONAL_ORDER]
        if account.get("account_id"):
            places.append(account["account_id"])
        return ",".join(places)
    try:
        separator = _SEPARATORS[fmt]
    except KeyError:
        raise ValueError(f"unknown line format {fmt!r}; expected one of {LINE_FORMATS}") from None
    # FIELDS has the access token before the session token: in this format
    # the first JWT on a line is read as the access token.
    return separator.join(account[name] for name in FIELDS if account.get(name))


def render_csv(
    accounts: Iterable[dict],
    columns: Sequence[str],
    *,
    header: Sequence[str] | None = None,
    quoting: int = csv.QUOTE_MINIMAL,
) -> str:
    """CSV text with a header row; ``header`` replaces the column names shown."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=quoting)
    writer.writerow(header if header is not None else columns)
    for account in accounts:
        writer.writerow([account.get(name) or "" for name in columns])
    return out.getvalue()
