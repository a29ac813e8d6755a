"""A fake seat manager ("team-manage") on a real loopback HTTP server, for integration tests.

It mirrors the import API described in docs/MANAGER.md, closely
enough that the project's manager client (built on ``requests``) can be pointed at
``FakeManager.base_url`` with nothing mocked:

* ``POST /admin/teams/import`` with ``X-API-Key``; a wrong key answers 401, or ``307 → /login``
  when the request's Accept header prefers HTML; ``GET``/``POST /login`` serve an HTML page with
  status 200, so a client that wrongly follows the redirect sees what it would see for real.
* Single mode (2a): FastAPI-style 422s, the no-token 400, "无效的导入类型" for an unknown
  ``import_type`` (the side-effect-free probe), the renewal rule (an access token with less than
  8 hours left needs a session token or refresh token + client ID), email from the access token's
  profile claim, refusal on an email mismatch, and "already present" for a second import.
* Batch mode (2b): the manager's line parsing (including its lossy comma fallback), de-duplication
  by email, and a streamed ``application/x-ndjson`` answer (chunked transfer encoding).
* Scripted faults (``plan``/``default``), consumed one per import call: see ``BEHAVIOURS``.

ChatGPT itself is not simulated: every account with a usable token "has" exactly one active Team,
and renewing an access token from a session or refresh token always succeeds.

In-process use::

    with FakeManager() as fake:
        fake.plan(["drop", "ok"])
        ...  # point the client at fake.base_url
        assert fake.accept_counts == {"…": 1}

Out of process (next to web and worker processes), ``python -m tests.fake_manager --port 0
--api-key K`` prints ``READY http://127.0.0.1:PORT`` and serves until SIGTERM/SIGINT; the same
server answers a small control API under ``/_fake/`` (state, plan, reset), which
``FakeManagerProcess`` wraps.
"""

from __future__ import annotations

import argparse
import copy
import hmac
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

# The manager's reading of tokens, emails and lines, written from its observed behaviour
# (docs/MANAGER.md); the fake imports nothing from the product it tests.
from tests.support.manager_rules import (
    Claims,
    read_claims,
)
from tests.support.manager_rules import (
    looks_like_client_id as is_client_id,
)
from tests.support.manager_rules import (
    looks_like_email as is_email,
)
from tests.support.manager_rules import (
    looks_like_jwe as is_jwe,
)
from tests.support.manager_rules import (
    looks_like_jwt as is_jwt,
)
from tests.support.manager_rules import (
    looks_like_refresh_token as is_refresh_token,
)
from tests.support.manager_rules import (
    looks_like_uuid as is_uuid,
)
from tests.support.manager_rules import (
    masked as mask,
)

__all__ = [
    "BEHAVIOURS",
    "DEFAULT_API_KEY",
    "IMPORT_PATH",
    "LOGIN_PATH",
    "MSG_ALREADY_PRESENT",
    "MSG_EMAIL_MISMATCH",
    "MSG_IMPORTED",
    "MSG_INVALID_TYPE",
    "MSG_NOTHING_PARSED",
    "MSG_NO_EMAIL",
    "MSG_NO_TEAM",
    "MSG_NO_TOKEN",
    "MSG_NO_USABLE_AT",
    "MSG_SERVER_ERROR",
    "MSG_UNAUTHORIZED",
    "Behaviour",
    "FakeManager",
    "FakeManagerProcess",
    "main",
]

DEFAULT_API_KEY = "test-manager-key"
HOST = "127.0.0.1"
IMPORT_PATH = "/admin/teams/import"
_TEAM_INFO_RE = re.compile(r"/admin/teams/(\d{1,18})/info")
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
_MASKED_HEADERS = frozenset({"x-api-key", "authorization", "cookie"})

_LOGIN_PAGE = (
    '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8"><title>管理员登录</title>'
    '</head><body><form method="post" action="/login"><h1>管理员登录</h1>'
    '<input name="username"><input name="password" type="password">'
    '<button type="submit">登录</button></form></body></html>\n'
).encode()
# What "garbage" answers: labelled JSON, so a client cannot avoid the decode error by
# checking the content type alone (a proxy error page behind a misconfigured route).
_GARBAGE_BODY = b"<html><body><h1>502 Bad Gateway</h1><p>upstream sent nonsense</p></body></html>"


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
_ANSWER_FAULTS = frozenset({"http500", "unauthorized", "drop", "garbage", "redirect"})


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


_OK = Behaviour("ok")


# --- account material ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Account:
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


def _parse_line(line: str) -> _Account | None:
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
    account = _Account(**found)
    return account if account.has_token else None


def _parse_batch(content: str | None) -> list[_Account]:
    """The accounts of batch ``content``, one per line, de-duplicated by email (first wins).

    A line without an email of its own is matched by its access token's email; lines with no
    email at all are never de-duplicated. Lines that yield no token are skipped.
    """
    accounts: list[_Account] = []
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


def _account_from_body(body: dict) -> _Account:
    """The account a single-mode body names; non-string fields count as absent (422 elsewhere)."""
    fields = {name: value for name in _ACCOUNT_FIELDS if isinstance(value := body.get(name), str)}
    return _Account(**fields)


def _submitted_accounts(body: Any) -> list[_Account]:
    """Every importable account a request names, whatever will become of the request."""
    if not isinstance(body, dict):
        return []
    if body.get("import_type") == "single":
        account = _account_from_body(body)
        return [account] if account.has_token else []
    if body.get("import_type") == "batch":
        content = body.get("content")
        return _parse_batch(content if isinstance(content, str) else None)
    return []


# --- FastAPI's request handling -------------------------------------------------------------

_NO_BODY = object()


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


def _decode_body(raw: bytes, content_type: str | None) -> tuple[Any, dict | None]:
    """(body, json_error) as FastAPI sees them: parsed JSON, raw bytes, or _NO_BODY.

    A JSON body that does not decode is answered 422 *before* dependencies (the key check)
    run, so the error is returned separately.
    """
    if not raw:
        return _NO_BODY, None
    if not _wants_json(content_type):
        return raw, None
    try:
        return json.loads(raw), None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        position = getattr(exc, "pos", 0)
        reason = getattr(exc, "msg", "Invalid UTF-8")
        return _NO_BODY, {
            "type": "json_invalid",
            "loc": ["body", position],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": reason},
        }


def _validation_errors(body: Any) -> list[dict]:
    """Pydantic's complaints about the request model (import_type: str, the rest Optional[str]).

    Like FastAPI, the offending input is echoed back, tokens included: a client must not log a
    422 body blindly.
    """
    if body is _NO_BODY:
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


def _prefers_html(accept: str | None) -> bool:
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
class _Outcome:
    status: int
    body: dict


def _refused(email: str | None, error: str) -> _Outcome:
    body = {"success": False, "team_id": None, "email": email, "message": None, "error": error}
    return _Outcome(400, body)


def _redact_body(body: Any) -> Any:
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


def _redact_record(record: dict) -> dict:
    return {
        name: mask(value) if name in _TOKEN_FIELDS and isinstance(value, str) else value
        for name, value in record.items()
    }


# --- the server ---------------------------------------------------------------------------


class FakeManager:
    """The seat manager's import API on ``http://127.0.0.1:PORT``, with scripted faults.

    ``api_key=None`` is a manager with no key configured: every import answers 401.
    All state sits behind one lock; the inspection properties return copies.
    """

    def __init__(self, api_key: str | None = DEFAULT_API_KEY, *, port: int = 0) -> None:
        self.api_key = api_key
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._reset_state()

    def _reset_state(self) -> None:
        self._plan: deque[Behaviour] = deque()
        self._default = _OK
        self._imported: dict[str, dict] = {}
        self._accept_counts: dict[str, int] = {}
        self._attempt_counts: dict[str, int] = {}
        self._requests: list[dict] = []
        self._last_team_id = 0
        self._teamless: set[str] = set()  # identities ChatGPT found no Team for
        self._open: list[dict] = []  # the log entries of import calls being handled right now
        self._teams: dict[int, dict] = {}  # team id → the manager's Team record (tokens included)
        self._info_plan: deque[Behaviour] = deque()

    # lifecycle

    def start(self) -> FakeManager:
        if self._server is not None:
            raise RuntimeError("this FakeManager has already been started")
        self._server = _Server((HOST, self._port), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-manager",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection (waking slow and hanging answers)."""
        if self._server is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeManager:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("start the FakeManager first")
        return f"http://{HOST}:{self._server.server_address[1]}"

    @property
    def import_url(self) -> str:
        return self.base_url + IMPORT_PATH

    # scripting

    def plan(self, behaviours: Iterable[str]) -> None:
        """Script the next import calls, one behaviour each (replacing what is left of a plan)."""
        parsed = [Behaviour.parse(spec) for spec in behaviours]
        with self._lock:
            self._plan = deque(parsed)

    @property
    def default(self) -> str:
        """The behaviour once the plan is used up; normally "ok"."""
        with self._lock:
            return str(self._default)

    @default.setter
    def default(self, spec: str) -> None:
        behaviour = Behaviour.parse(spec)
        with self._lock:
            self._default = behaviour

    def reset(self) -> None:
        """Forget every import, count, request, the plan and the default, as a fresh manager."""
        with self._lock:
            self._reset_state()

    # the Teams, as the Team-info endpoint reports them

    def team_set(self, team_id: int, **fields: Any) -> None:
        """Change what the manager says of a Team (status, current_members, last_sync, …)."""
        with self._lock:
            self._teams[team_id].update(fields)

    def team_remove(self, team_id: int) -> None:
        """The manager deletes the Team: its info answers 404 from now on."""
        with self._lock:
            self._teams.pop(team_id, None)

    def teams(self) -> dict[int, dict]:
        with self._lock:
            return copy.deepcopy(self._teams)

    def info_plan(self, behaviours: Iterable[str]) -> None:
        """Script the next Team-info calls: ok, http500, unauthorized, redirect, slow:S, drop, cut, garbage."""
        parsed = [Behaviour.parse(spec) for spec in behaviours]
        with self._lock:
            self._info_plan = deque(parsed)

    def info_calls(self) -> list[dict]:
        """Every Team-info call: its path, behaviour and status (None: no answer sent)."""
        with self._lock:
            return [
                {
                    "path": r["path"],
                    "behaviour": r["behaviour"],
                    "status": r["status"],
                    "time": r["time"],
                }
                for r in self._requests
                if r["method"] == "GET" and _TEAM_INFO_RE.fullmatch(r["path"])
            ]

    # inspection

    @property
    def imported(self) -> dict[str, dict]:
        """identity → {email, account_id, the tokens it got, client_id, team_id, mode, time}."""
        with self._lock:
            return copy.deepcopy(self._imported)

    @property
    def accept_counts(self) -> dict[str, int]:
        """identity → imports of it that were accepted; at most 1 by construction, so tests count
        calls (``attempt_counts``, ``requests``) rather than assert on this."""
        with self._lock:
            return dict(self._accept_counts)

    @property
    def attempt_counts(self) -> dict[str, int]:
        """identity → import calls that named it, whatever the answer (faults and refusals too)."""
        with self._lock:
            return dict(self._attempt_counts)

    @property
    def requests(self) -> list[dict]:
        """Every request except the control API: method, path, headers (keys masked), body
        (parsed JSON, tokens included), behaviour, status (None: no answer sent), time."""
        with self._lock:
            return copy.deepcopy(self._requests)

    @property
    def in_flight(self) -> list[str]:
        """The behaviours of the import calls being handled right now (a slow or hanging answer
        holds one open for its whole length)."""
        with self._lock:
            return [entry["behaviour"] for entry in self._open]

    def import_calls(self) -> list[dict]:
        """Every import call in arrival order: time, the emails it named (lower case), behaviour,
        status (None: no answer sent). What a proof compares with the pool's own history."""
        with self._lock:
            calls = [
                (r["time"], r["body"], r["behaviour"], r["status"])
                for r in self._requests
                if r["method"] == "POST" and r["path"] == IMPORT_PATH
            ]
        return [
            {
                "time": at,
                "emails": [
                    email
                    for account in _submitted_accounts(body)
                    if (email := account.known_email())
                ],
                # What the fake de-duplicates on (the account ID if given, else the email).
                "identities": [
                    key for account in _submitted_accounts(body) if (key := account.identity())
                ],
                "behaviour": behaviour,
                "status": status,
            }
            for at, body, behaviour, status in calls
        ]

    def state(self) -> dict:
        """Everything above without token values, as the control API serves it."""
        with self._lock:
            return copy.deepcopy(
                {
                    "imported": {
                        identity: _redact_record(r) for identity, r in self._imported.items()
                    },
                    "accept_counts": self._accept_counts,
                    "attempt_counts": self._attempt_counts,
                    "requests": [{**r, "body": _redact_body(r["body"])} for r in self._requests],
                    "plan": [str(b) for b in self._plan],
                    "default": str(self._default),
                }
            )

    # used by the handler

    def _take_behaviour(self) -> Behaviour:
        with self._lock:
            return self._plan.popleft() if self._plan else self._default

    def _key_ok(self, given: str | None) -> bool:
        if self.api_key is None or given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8"), self.api_key.encode("utf-8"))

    def _log_request(self, method: str, path: str, headers: Message, body: Any) -> dict:
        entry = {
            "method": method,
            "path": path,
            "headers": {
                name: mask(value) if name.lower() in _MASKED_HEADERS else value
                for name, value in headers.items()
            },
            "body": None if body is _NO_BODY or isinstance(body, bytes) else body,
            "behaviour": None,
            "status": None,
            "time": time.time(),
        }
        with self._lock:
            self._requests.append(entry)
        return entry

    def _note(self, entry: dict, **fields: Any) -> None:
        with self._lock:
            entry.update(fields)

    def _count_attempts(self, accounts: Iterable[_Account]) -> None:
        identities = [identity for account in accounts if (identity := account.identity())]
        with self._lock:
            for identity in identities:
                self._attempt_counts[identity] = self._attempt_counts.get(identity, 0) + 1

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the fake stops."""
        self._stopping.wait(seconds)

    def _import_one(self, account: _Account, behaviour: Behaviour, mode: str) -> _Outcome:
        """One account through the manager's import_team_single, in its order of checks."""
        claims = account.claims()
        now = datetime.now(UTC)
        at_usable = bool(claims and claims.expires_at and claims.expires_at - now >= AT_CLOCK_SKEW)
        # The manager would renew the access token here; the fake assumes renewal succeeds.
        renewable = bool(account.session_token or (account.refresh_token and account.client_id))
        if not (at_usable or renewable):
            return _refused(account.email, MSG_NO_USABLE_AT)
        # read_claims lowercases the claim; the manager compares case-insensitively.
        token_email = claims.email if claims else None
        email = account.email
        if not email:
            # After a renewal the manager reads the new token's email; the fake can only read the
            # old one, which belongs to the same account.
            email = token_email
            if not email:
                return _refused(None, MSG_NO_EMAIL)
        elif token_email and token_email != email.strip().lower():
            return _refused(email, MSG_EMAIL_MISMATCH.format(token_email=token_email, email=email))
        return self._land(account, email, mode, no_team=behaviour.name == "reject")

    def _land(self, account: _Account, email: str, mode: str, *, no_team: bool = False) -> _Outcome:
        """Import the account unless the manager holds it already or it has no Team.

        "No Team" is ChatGPT's answer about the account, so after the local checks, and it
        stays true of that account: a later or concurrent import of it gets the same answer. An
        account the manager already holds still has its Team ("already present"), whatever the
        script says. So a fault schedule cannot make the fake contradict itself.
        """
        identity = _Account(email=email, account_id=account.account_id).identity()
        # The checks and the insert share one critical section: a second accept of the same
        # identity cannot happen, however many requests race.
        with self._lock:
            if identity in self._imported:
                return _refused(email, MSG_ALREADY_PRESENT)
            if no_team or identity in self._teamless:
                self._teamless.add(identity)
                return _refused(email, MSG_NO_TEAM)
            self._last_team_id += 1
            team_id = self._last_team_id
            self._imported[identity] = {
                "email": email,
                "account_id": account.account_id,
                "access_token": account.access_token,
                "session_token": account.session_token,
                "refresh_token": account.refresh_token,
                "client_id": account.client_id,
                "team_id": team_id,
                "mode": mode,
                "time": time.time(),
            }
            self._accept_counts[identity] = self._accept_counts.get(identity, 0) + 1
            moment = datetime.now(UTC).replace(tzinfo=None).isoformat()
            self._teams[team_id] = {
                "id": team_id,
                "email": email,
                "account_id": account.account_id or str(uuid.uuid4()),
                "team_name": f"Team {team_id}",
                "plan_type": "team",
                "subscription_plan": "chatgptteamplan",
                "expires_at": (datetime.now(UTC) + timedelta(days=30))
                .replace(tzinfo=None)
                .isoformat(),
                "current_members": 1,
                "max_members": 6,
                "status": "active",
                "last_sync": moment,
                "created_at": moment,
                # The manager's answer carries the Team's decrypted tokens (docs/FOLLOW_UP.md).
                "access_token": account.access_token,
                "refresh_token": account.refresh_token,
                "session_token": account.session_token,
                "client_id": account.client_id,
            }
        body = {
            "success": True,
            "team_id": team_id,
            "email": email,
            "message": MSG_IMPORTED,
            "error": None,
        }
        return _Outcome(200, body)

    def _batch_events(self, accounts: list[_Account], behaviour: Behaviour) -> Iterator[dict]:
        """The NDJSON stream; lazy, so accounts after a cut are never imported."""
        total = len(accounts)
        yield {"type": "start", "total": total}
        succeeded = failed = 0
        for current, account in enumerate(accounts, 1):
            result = self._import_one(account, behaviour, "batch").body
            if result["success"]:
                succeeded += 1
            else:
                failed += 1
            yield {
                "type": "progress",
                "current": current,
                "total": total,
                "success_count": succeeded,
                "failed_count": failed,
                "last_result": {
                    "email": result["email"] or "未知",
                    "account_id": account.account_id or "未指定",
                    "success": result["success"],
                    "team_id": result["team_id"],
                    "message": result["message"],
                    "error": result["error"],
                },
            }
        yield {"type": "finish", "total": total, "success_count": succeeded, "failed_count": failed}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Bursts of concurrent clients (web and worker processes) must not wait on SYN retries.
    request_queue_size = 128
    # stop() cuts every connection itself; joining handler threads here could wait on a client.
    block_on_close = False
    fake: FakeManager

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (read timeout) makes the late answer fail: expected, not news.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as uvicorn does
    server: _Server

    def version_string(self) -> str:
        return "uvicorn"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # fake.requests is the log; stderr stays clean

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.fake._lock:
                self.server.fake._connections.discard(self.connection)

    # routing

    def do_GET(self) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path
        if path == CONTROL_PREFIX + "state":
            self._send_json(200, fake.state())
            return
        entry = fake._log_request(self.command, path, self.headers, None)
        if path == LOGIN_PATH:
            self._send(entry, 200, _LOGIN_PAGE, "text/html; charset=utf-8")
        elif match := _TEAM_INFO_RE.fullmatch(path):
            self._team_info(entry, int(match.group(1)))
        elif path == IMPORT_PATH:
            self._send_json(
                405, {"detail": "Method Not Allowed"}, entry, extra_headers={"Allow": "POST"}
            )
        else:
            self._send_json(404, {"detail": "Not Found"}, entry)

    def do_POST(self) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path
        raw = self._read_body()
        if path.startswith(CONTROL_PREFIX):
            self._control(path, raw)
            return
        body, json_error = _decode_body(raw, self.headers.get("Content-Type"))
        entry = fake._log_request(self.command, path, self.headers, body)
        if path == IMPORT_PATH:
            with fake._lock:
                fake._open.append(entry)
            try:
                self._import(entry, body, json_error)
            finally:
                with fake._lock:
                    fake._open.remove(entry)
        elif path == LOGIN_PATH:
            # Where a client that follows the 307 ends up (307 keeps the POST): a login page.
            self._send(entry, 200, _LOGIN_PAGE, "text/html; charset=utf-8")
        else:
            self._send_json(404, {"detail": "Not Found"}, entry)

    # the Team-info API (docs/FOLLOW_UP.md): the manager's own record, no ChatGPT call

    def _team_info(self, entry: dict, team_id: int) -> None:
        fake = self.server.fake
        with fake._lock:
            behaviour = fake._info_plan.popleft() if fake._info_plan else _OK
        fake._note(entry, behaviour=str(behaviour))
        if behaviour.name == "slow":
            fake._pause(behaviour.arg)
        if behaviour.name in ("http500", "drop", "garbage", "redirect"):
            self._answer_fault(entry, behaviour)
            return
        if behaviour.name == "unauthorized" or not fake._key_ok(self.headers.get("X-API-Key")):
            self._unauthorized(entry)
            return
        with fake._lock:
            team = copy.deepcopy(fake._teams.get(team_id))
        if team is None:
            self._send_json(404, {"success": False, "error": f"Team ID {team_id} 不存在"}, entry)
            return
        body = {
            "success": True,
            "team": team,
            "team_accounts": [{"email": team["email"], "role": "owner"}],
            "error": None,
        }
        if behaviour.name == "cut":
            payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
            fake._note(entry, status=200)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])  # then the connection closes
            self.close_connection = True
            return
        self._send_json(200, body, entry)

    # the import API

    def _import(self, entry: dict, body: Any, json_error: dict | None) -> None:
        fake = self.server.fake
        behaviour = fake._take_behaviour()
        fake._note(entry, behaviour=str(behaviour))
        fake._count_attempts(_submitted_accounts(body))

        if behaviour.name in _ANSWER_FAULTS:
            self._answer_fault(entry, behaviour)
        elif json_error is not None:
            self._send_json(422, {"detail": [json_error]}, entry)
        elif not fake._key_ok(self.headers.get("X-API-Key")):
            self._unauthorized(entry)
        elif errors := _validation_errors(body):
            self._send_json(422, {"detail": errors}, entry)
        elif body["import_type"] == "single":
            account = _account_from_body(body)
            if not account.has_token:
                self._send_json(400, {"success": False, "error": MSG_NO_TOKEN}, entry)
            else:
                self._single(entry, account, behaviour)
        elif body["import_type"] == "batch":
            self._batch(entry, _parse_batch(body.get("content")), behaviour)
        else:
            # Also the side-effect-free probe {"import_type": "probe"}: key right, nothing done.
            self._send_json(400, {"success": False, "error": MSG_INVALID_TYPE}, entry)

    def _answer_fault(self, entry: dict, behaviour: Behaviour) -> None:
        if behaviour.name == "http500":
            self._send_json(500, {"success": False, "error": MSG_SERVER_ERROR}, entry)
        elif behaviour.name == "unauthorized":
            self._unauthorized(entry)
        elif behaviour.name == "drop":
            self._drop()
        elif behaviour.name == "garbage":
            self._send(entry, 200, _GARBAGE_BODY, "application/json")
        else:  # redirect
            self._redirect(entry)

    def _single(self, entry: dict, account: _Account, behaviour: Behaviour) -> None:
        fake = self.server.fake
        if behaviour.name == "slow":
            # The import itself completes even if the client has given up meanwhile, as on a
            # real manager whose ChatGPT calls are slow.
            fake._pause(behaviour.arg)
        outcome = fake._import_one(account, behaviour, "single")
        if behaviour.name in ("landed_then_drop", "cut"):
            self._drop()
        elif behaviour.name == "landed_then_hang":
            fake._pause(behaviour.arg)
            self._drop()
        else:
            self._send_json(outcome.status, outcome.body, entry)

    def _batch(self, entry: dict, accounts: list[_Account], behaviour: Behaviour) -> None:
        fake = self.server.fake
        if behaviour.name == "slow":
            fake._pause(behaviour.arg)
        if not accounts:
            self._stream(entry, [{"type": "error", "error": MSG_NOTHING_PARSED}])
            return
        events = fake._batch_events(accounts, behaviour)
        if behaviour.name in ("landed_then_drop", "landed_then_hang"):
            for _ in events:  # every account lands before the connection fails
                pass
            if behaviour.name == "landed_then_hang":
                fake._pause(behaviour.arg)
            self._drop()
        elif behaviour.name == "cut":
            self._stream(entry, islice(events, 1 + behaviour.arg), complete=False)
        else:
            self._stream(entry, events)

    # answers

    def _send(
        self,
        entry: dict | None,
        status: int,
        payload: bytes,
        content_type: str,
        extra_headers: dict | None = None,
    ) -> None:
        if entry is not None:
            self.server.fake._note(entry, status=status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(
        self, status: int, body: Any, entry: dict | None = None, extra_headers: dict | None = None
    ) -> None:
        # FastAPI's JSONResponse: UTF-8, no ASCII escapes, compact separators.
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._send(entry, status, payload, "application/json", extra_headers)

    def _unauthorized(self, entry: dict) -> None:
        if _prefers_html(self.headers.get("Accept")):
            self._redirect(entry)
        else:
            self._send_json(401, {"detail": MSG_UNAUTHORIZED}, entry)

    def _redirect(self, entry: dict) -> None:
        self._send(entry, 307, b"", "text/plain; charset=utf-8", {"Location": LOGIN_PATH})

    def _drop(self) -> None:
        """Close the connection without a byte of answer (the log's status stays None)."""
        self.close_connection = True

    def _stream(self, entry: dict, events: Iterable[dict], *, complete: bool = True) -> None:
        """A 200 NDJSON answer, one flushed chunk per line; an incomplete one is cut short by
        closing the connection without the final chunk, which the client sees as a broken body."""
        self.server.fake._note(entry, status=200)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            line = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
        if complete:
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.close_connection = True

    # the control API (not part of the manager; never logged)

    def _control(self, path: str, raw: bytes) -> None:
        fake = self.server.fake
        if path == CONTROL_PREFIX + "reset":
            fake.reset()
            self._send_json(200, {"ok": True})
        elif path == CONTROL_PREFIX + "plan":
            try:
                request = json.loads(raw or b"{}")
                if not isinstance(request, dict) or not isinstance(request.get("plan", []), list):
                    raise ValueError('expected {"plan": [...], "default": "..."}')
                # Check everything before changing anything: a bad request leaves the script as is.
                behaviours = [str(Behaviour.parse(spec)) for spec in request.get("plan", [])]
                default = request.get("default")
                if default is not None:
                    Behaviour.parse(default)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                self._send_json(400, {"error": str(exc)})
                return
            fake.plan(behaviours)
            if default is not None:
                fake.default = default
            self._send_json(200, {"plan": behaviours, "default": fake.default})
        else:
            self._send_json(404, {"detail": "Not Found"})

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""


# --- out of process ------------------------------------------------------------------------

_PROJECT_ROOT = Path(__file__).resolve().parents[1]


class FakeManagerProcess:
    """``python -m tests.fake_manager`` as a subprocess, driven through its control API.

    For tests that run the project as separate processes (web, worker): they all reach the fake
    over HTTP, and the test inspects and scripts it the same way.
    """

    def __init__(
        self,
        api_key: str | None = DEFAULT_API_KEY,
        *,
        ready_timeout: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        self.api_key = api_key
        self.ready_timeout = ready_timeout
        self.timeout = timeout  # for each control-API call
        self._process: subprocess.Popen | None = None
        self._base_url: str | None = None

    def start(self) -> FakeManagerProcess:
        command = [sys.executable, "-m", "tests.fake_manager", "--port", "0"]
        command += ["--no-api-key"] if self.api_key is None else ["--api-key", self.api_key]
        self._process = subprocess.Popen(
            command, cwd=_PROJECT_ROOT, stdout=subprocess.PIPE, text=True
        )
        try:
            self._base_url = self._read_ready_url()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_ready_url(self) -> str:
        # readline() blocks; a helper thread lets the wait time out if the child never gets ready.
        lines: queue.Queue[str] = queue.Queue(maxsize=1)
        threading.Thread(
            target=lambda: lines.put(self._process.stdout.readline()), daemon=True
        ).start()
        try:
            line = lines.get(timeout=self.ready_timeout)
        except queue.Empty:
            raise RuntimeError(
                f"the fake manager was not ready within {self.ready_timeout} s"
            ) from None
        if not line.startswith("READY "):
            code = self._process.poll()
            raise RuntimeError(f"the fake manager did not start (exit code {code}): {line!r}")
        return line.split(" ", 1)[1].strip()

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process.stdout.close()

    def __enter__(self) -> FakeManagerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("start the FakeManagerProcess first")
        return self._base_url

    @property
    def import_url(self) -> str:
        return self.base_url + IMPORT_PATH

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def state(self) -> dict:
        """``FakeManager.state()`` of the child: no token values."""
        response = requests.get(self.base_url + CONTROL_PREFIX + "state", timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def plan(self, behaviours: Iterable[str], default: str | None = None) -> None:
        """Script the child's next import calls (and its default, when given)."""
        request: dict[str, Any] = {"plan": list(behaviours)}
        if default is not None:
            request["default"] = default
        url = self.base_url + CONTROL_PREFIX + "plan"
        response = requests.post(url, json=request, timeout=self.timeout)
        if response.status_code == 400:
            raise ValueError(response.json()["error"])
        response.raise_for_status()

    def reset(self) -> None:
        requests.post(
            self.base_url + CONTROL_PREFIX + "reset", timeout=self.timeout
        ).raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_manager",
        description="Serve a fake seat manager on 127.0.0.1 until SIGTERM or SIGINT.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--api-key", default=DEFAULT_API_KEY, help="the X-API-Key imports must carry")
    keys.add_argument(
        "--no-api-key",
        action="store_true",
        help="a manager with no key configured: every import answers 401",
    )
    args = parser.parse_args(argv)

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with FakeManager(None if args.no_api_key else args.api_key, port=args.port) as fake:
        print(f"READY {fake.base_url}", flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
