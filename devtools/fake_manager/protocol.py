"""The seat manager's import and Team-info APIs as the fake speaks them: paths, the manager's own
texts, the scripted behaviours, how it reads what it is sent (single bodies, batch lines, FastAPI's
body decoding and validation), its answers, and what the fake's logs show of them (redacted).

Plain data and functions: the state is in state.py, the HTTP handling in handler.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from email.message import Message
from typing import Any

# The manager's reading of tokens, emails and lines, written from its observed behaviour
# (docs/MANAGER.md); the fake imports nothing from the product it tests.
from devtools.fake_manager.rules import Claims, read_claims
from devtools.fake_manager.rules import looks_like_client_id as is_client_id
from devtools.fake_manager.rules import looks_like_email as is_email
from devtools.fake_manager.rules import looks_like_jwe as is_jwe
from devtools.fake_manager.rules import looks_like_jwt as is_jwt
from devtools.fake_manager.rules import looks_like_refresh_token as is_refresh_token
from devtools.fake_manager.rules import looks_like_uuid as is_uuid
from devtools.fake_manager.rules import masked as mask

DEFAULT_API_KEY = "test-manager-key"
HOST = "127.0.0.1"
IMPORT_PATH = "/admin/teams/import"
TEAM_INFO_RE = re.compile(r"/admin/teams/(\d{1,18})/info")
LOGIN_PATH = "/login"
CONTROL_PREFIX = "/_fake/"

# The manager's own texts (docs/MANAGER.md), so clients are tested
# against exactly what they will read.
MSG_UNAUTHORIZED = "未登录或 API Key 无效"
MSG_NO_TOKEN = "必须提供 Access Token、Refresh Token 或 Session Token 其中之一"
MSG_INVALID_TYPE = "无效的导入类型"
MSG_NO_USABLE_AT = "缺少有效的 Access Token，且无法通过 Session/Refresh Token 刷新"
MSG_NO_EMAIL = "无法从 Token 中提取邮箱,请手动提供邮箱"
MSG_EMAIL_MISMATCH = (
    "Token 对应的账号身份 ({token_email}) 与提供的邮箱 ({email}) 不符，导入已中止。"
    "请检查是否有其他账号正在登录导致 Session 污染。"
)
MSG_ALREADY_PRESENT = "共发现 1 个 Team 账号,但均已在系统中"
MSG_IMPORTED = "成功导入 1 个 Team 账号"
MSG_NO_TEAM = "该 Token 没有关联任何 Team 账户"
# A failure the real manager shows under load (its SQLite races; docs/MANAGER.md).
MSG_SERVER_ERROR = "导入失败: database is locked"
MSG_NOTHING_PARSED = "未能从文本中提取任何 Token"

# The manager compares UTC with Asia/Shanghai time, so an access token with less than this left
# already counts as expired (docs/MANAGER.md).
AT_CLOCK_SKEW = timedelta(hours=8)

_TOKEN_FIELDS = ("access_token", "session_token", "refresh_token")
_ACCOUNT_FIELDS = (
    "email",
    "access_token",
    "session_token",
    "refresh_token",
    "client_id",
    "account_id",
)
# The optional string fields of the manager's request model (pydantic), besides import_type.
_MODEL_STR_FIELDS = (*_ACCOUNT_FIELDS, "content")
MASKED_HEADERS = frozenset({"x-api-key", "authorization", "cookie"})

LOGIN_PAGE = (
    '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8"><title>管理员登录</title>'
    '</head><body><form method="post" action="/login"><h1>管理员登录</h1>'
    '<input name="username"><input name="password" type="password">'
    '<button type="submit">登录</button></form></body></html>\n'
).encode()
# What "garbage" answers: labelled JSON, so a client cannot avoid the decode error by
# checking the content type alone (a proxy error page behind a misconfigured route).
GARBAGE_BODY = b"<html><body><h1>502 Bad Gateway</h1><p>upstream sent nonsense</p></body></html>"


# --- scripted behaviours ------------------------------------------------------------------

# name → kind of argument (None: no argument).
_BEHAVIOUR_ARGS: dict[str, type | None] = {
    "ok": None,
    "http500": None,
    "unauthorized": None,
    "reject": None,
    "slow": float,
    "drop": None,
    "landed_then_drop": None,
    "landed_then_hang": float,
    "garbage": None,
    "redirect": None,
    "cut": int,
}
BEHAVIOURS = tuple(_BEHAVIOUR_ARGS)
# These replace the whole answer, before the key is checked: they stand for the server or the
# network failing, whatever the request was. Nothing is recorded.
ANSWER_FAULTS = frozenset({"http500", "unauthorized", "drop", "garbage", "redirect"})


@dataclass(frozen=True)
class Behaviour:
    """One scripted behaviour for one import call, parsed from its spelling.

    ``ok``, ``http500``, ``unauthorized``, ``reject``, ``slow:SECONDS``, ``drop``,
    ``landed_then_drop``, ``landed_then_hang:SECONDS``, ``garbage``, ``redirect``, ``cut:K``.
    """

    name: str
    arg: float | int | None = None

    @classmethod
    def parse(cls, spec: str) -> Behaviour:
        if not isinstance(spec, str):
            raise ValueError(f"a behaviour is a string, not {type(spec).__name__}")
        name, sep, raw_arg = spec.strip().partition(":")
        if name not in _BEHAVIOUR_ARGS:
            raise ValueError(f"unknown behaviour {spec!r}; expected one of {', '.join(BEHAVIOURS)}")
        kind = _BEHAVIOUR_ARGS[name]
        if kind is None:
            if sep:
                raise ValueError(f"behaviour {name!r} takes no argument")
            return cls(name)
        try:
            arg = kind(raw_arg)
        except ValueError:
            raise ValueError(f"behaviour {name!r} needs a {kind.__name__}: {name}:N") from None
        if arg < 0:
            raise ValueError(f"behaviour {name!r} needs a non-negative argument")
        return cls(name, arg)

    def __str__(self) -> str:
        return self.name if self.arg is None else f"{self.name}:{self.arg:g}"


OK = Behaviour("ok")


# --- account material ---------------------------------------------------------------------


@dataclass(frozen=True)
class SubmittedAccount:
    """What one import names: the fields of a single-mode body, or of one batch line."""

    email: str | None = None
    access_token: str | None = None
    session_token: str | None = None
    refresh_token: str | None = None
    client_id: str | None = None
    account_id: str | None = None

    @property
    def has_token(self) -> bool:
        return bool(self.access_token or self.session_token or self.refresh_token)

    def claims(self) -> Claims | None:
        """The access token's claims, read unverified as the manager does; None if unreadable."""
        if not self.access_token:
            return None
        return read_claims(self.access_token)

    def known_email(self) -> str | None:
        """The email given, else the one in the access token's profile claim, in lower case."""
        email = self.email or (claims.email if (claims := self.claims()) else None)
        return email.strip().lower() if email else None

    def identity(self) -> str | None:
        """The key the fake de-duplicates on: the account ID if given, else the email.

        The real manager de-duplicates by the workspace's account_id, which it learns from
        ChatGPT; without ChatGPT the fake stands in for it with the account's email.
        """
        if self.account_id:
            return self.account_id.strip().lower()
        return self.known_email()


# Batch content: the manager splits a line on "----", "|", a tab, or two or more spaces.
_SEPARATOR_RE = re.compile(r"----|\||\t|\s{2,}")
# The manager's own patterns, used only by its fallback, which searches the whole line rather
# than whole parts (so it finds nothing JWE-shaped: the session token is dropped, as observed).
_FALLBACK_PATTERNS = (
    ("email", re.compile(r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}")),
    ("account_id", re.compile(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}", re.IGNORECASE)),
    ("refresh_token", re.compile(r"rt[_-][A-Za-z0-9._-]+")),
    ("client_id", re.compile(r"app_[A-Za-z0-9]+")),
)
_FALLBACK_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _classify(part: str, found: dict[str, str | None]) -> None:
    """Put one delimited part in its slot by shape; the first of each kind wins."""
    if is_jwt(part):
        # The first JWT is the access token, a second one the session token.
        slot = "session_token" if found["access_token"] else "access_token"
    elif is_jwe(part):
        # The real session-token cookie is a JWE: never mistaken for an access token.
        slot = "session_token"
    elif is_email(part):
        slot = "email"
    elif is_uuid(part):
        slot = "account_id"
    elif is_refresh_token(part):
        slot = "refresh_token"
    elif is_client_id(part):
        slot = "client_id"
    else:
        return  # unrecognised parts are ignored, as by the manager
    if found[slot] is None:
        found[slot] = part


def _parse_line(line: str) -> SubmittedAccount | None:
    found: dict[str, str | None] = dict.fromkeys(_ACCOUNT_FIELDS)
    parts = [part.strip() for part in _SEPARATOR_RE.split(line) if part.strip()]
    if len(parts) >= 2:
        for part in parts:
            _classify(part, found)
    if not (found["access_token"] or found["session_token"]):
        # The fallback, for lines the split did not explain: among them every comma line, since
        # the manager never splits on a single comma.
        jwts = _FALLBACK_JWT_RE.findall(line)
        if jwts:
            found["access_token"] = jwts[0]
            found["session_token"] = jwts[1] if len(jwts) > 1 else None
        for slot, pattern in _FALLBACK_PATTERNS:
            if found[slot] is None and (match := pattern.search(line)):
                found[slot] = match.group()
    account = SubmittedAccount(**found)
    return account if account.has_token else None


def parse_batch(content: str | None) -> list[SubmittedAccount]:
    """The accounts of batch ``content``, one per line, de-duplicated by email (first wins).

    A line without an email of its own is matched by its access token's email; lines with no
    email at all are never de-duplicated. Lines that yield no token are skipped.
    """
    accounts: list[SubmittedAccount] = []
    seen: set[str] = set()
    for raw in (content or "").strip().split("\n"):
        line = raw.strip()
        if not line or (account := _parse_line(line)) is None:
            continue
        email = account.known_email()
        if email:
            if email in seen:
                continue
            seen.add(email)
        accounts.append(account)
    return accounts


def account_from_body(body: dict) -> SubmittedAccount:
    """The account a single-mode body names; non-string fields count as absent (422 elsewhere)."""
    fields = {name: value for name in _ACCOUNT_FIELDS if isinstance(value := body.get(name), str)}
    return SubmittedAccount(**fields)


def submitted_accounts(body: Any) -> list[SubmittedAccount]:
    """Every importable account a request names, whatever will become of the request."""
    if not isinstance(body, dict):
        return []
    if body.get("import_type") == "single":
        account = account_from_body(body)
        return [account] if account.has_token else []
    if body.get("import_type") == "batch":
        content = body.get("content")
        return parse_batch(content if isinstance(content, str) else None)
    return []


# --- FastAPI's request handling -------------------------------------------------------------

NO_BODY = object()


def _wants_json(content_type: str | None) -> bool:
    """FastAPI decodes the body as JSON when there is no content type or a JSON one."""
    if not content_type:
        return True
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def decode_body(raw: bytes, content_type: str | None) -> tuple[Any, dict | None]:
    """(body, json_error) as FastAPI sees them: parsed JSON, raw bytes, or NO_BODY.

    A JSON body that does not decode is answered 422 *before* dependencies (the key check)
    run, so the error is returned separately.
    """
    if not raw:
        return NO_BODY, None
    if not _wants_json(content_type):
        return raw, None
    try:
        return json.loads(raw), None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        position = getattr(exc, "pos", 0)
        reason = getattr(exc, "msg", "Invalid UTF-8")
        return NO_BODY, {
            "type": "json_invalid",
            "loc": ["body", position],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": reason},
        }


def validation_errors(body: Any) -> list[dict]:
    """Pydantic's complaints about the request model (import_type: str, the rest Optional[str]).

    Like FastAPI, the offending input is echoed back, tokens included: a client must not log a
    422 body blindly.
    """
    if body is NO_BODY:
        return [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
    if not isinstance(body, dict):
        shown = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return [
            {
                "type": "model_attributes_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": shown,
            }
        ]
    errors = []
    if "import_type" not in body:
        errors.append(
            {
                "type": "missing",
                "loc": ["body", "import_type"],
                "msg": "Field required",
                "input": body,
            }
        )
    elif not isinstance(body["import_type"], str):
        errors.append(_string_type_error("import_type", body["import_type"]))
    errors.extend(
        _string_type_error(name, body[name])
        for name in _MODEL_STR_FIELDS
        if body.get(name) is not None and not isinstance(body[name], str)
    )
    return errors


def _string_type_error(name: str, value: Any) -> dict:
    return {
        "type": "string_type",
        "loc": ["body", name],
        "msg": "Input should be a valid string",
        "input": value,
    }


def prefers_html(accept: str | None) -> bool:
    """True when text/html is acceptable and no listed type has a higher quality.

    The manager's admin guard sends browsers (anything asking for HTML) to its login page.
    """
    qualities: dict[str, float] = {}
    for item in (accept or "").split(","):
        media, *params = (piece.strip() for piece in item.split(";"))
        if not media:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        qualities[media] = max(quality, qualities.get(media, 0.0))
    html = qualities.get("text/html", 0.0)
    return html > 0 and all(quality <= html for quality in qualities.values())


# --- outcomes and redaction ---------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict


def refused(email: str | None, error: str) -> Outcome:
    body = {"success": False, "team_id": None, "email": email, "message": None, "error": error}
    return Outcome(400, body)


def redact_body(body: Any) -> Any:
    """A logged request body without token values (for the control API and ``state()``)."""
    if body is None:
        return None
    if not isinstance(body, dict):
        return "<redacted>"
    shown = dict(body)
    for name in _TOKEN_FIELDS:
        if isinstance(shown.get(name), str):
            shown[name] = mask(shown[name])
    if isinstance(shown.get("content"), str):
        shown["content"] = f"<redacted: {len(shown['content'].splitlines())} lines>"
    return shown


def redact_record(record: dict) -> dict:
    return {
        name: mask(value) if name in _TOKEN_FIELDS and isinstance(value, str) else value
        for name, value in record.items()
    }
