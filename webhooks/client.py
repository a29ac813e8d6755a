"""The seat manager's import API: the one module that knows its HTTP shapes.

It reports facts (status, the body's verdict and text, what failed on our side); deciding what
they mean for an account is `services.attempt_outcome`'s job. Redirects are never followed: the
manager answers a wrong key with 307 → /login when a client accepts HTML, and following that
would look like a 200.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import requests
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from accounts.models import Account
from poolsite.text import text_storable

IMPORT_PATH = "/admin/teams/import"
TEAM_INFO_PATH = "/admin/teams/{team_id}/info"

# What the manager says when every Team of the account is already in it.
_ALREADY_PRESENT_RE = re.compile(r"已在系统中|already (?:exists|present|in)", re.IGNORECASE)

FAILURE_TIMEOUT = "timeout"
FAILURE_CONNECTION = "connection"
FAILURE_UNREADABLE = "unreadable"
FAILURE_REDIRECT = "redirect"
FAILURE_STREAM_CUT = "stream_cut"
FAILURE_BATCH_REFUSED = "batch_refused"
FAILURE_NOT_IN_STREAM = "not_in_stream"
FAILURE_UNRECORDED = "unrecorded"  # sent, but the run failed before it recorded the answer
# MANAGER_API_KEY cannot be sent as a header: nothing was sent (a configuration error).
FAILURE_BAD_KEY = "bad_key"

MAX_TEXT = 1000

# What probe() found. "Not configured" is for the caller to say: without a URL and key there is
# nothing to probe.
PROBE_OK = "ok"
PROBE_KEY_REFUSED = "key_refused"
PROBE_UNREACHABLE = "unreachable"
PROBE_UNEXPECTED = "unexpected"
PROBE_NOT_CONFIGURED = "not_configured"
# A status page waits on the probe: it need not wait as long as an import may take.
PROBE_READ_TIMEOUT = 5.0
# The manager's answer to an import_type it does not know, given only after the key was accepted.
_INVALID_IMPORT_TYPE_RE = re.compile(r"无效的导入类型")


@dataclass(frozen=True)
class ManagerAnswer:
    http_status: int | None  # None when no HTTP answer arrived
    success: bool | None  # the body's "success", None when absent or unreadable
    text: str  # the manager's message or error, redacted
    failure: str = ""  # what went wrong on our side, one of the FAILURE_* names
    duration_ms: int = 0
    team_id: int | None = None  # the manager's id of the (first) Team a confirmed import added
    # Our own account of what happened, when `text` is not the manager's (a stored message,
    # poolsite.messages): the account's last error shows it in the reader's language.
    note: tuple | None = None

    @property
    def already_present(self) -> bool:
        return bool(_ALREADY_PRESENT_RE.search(self.text))


MSG_KEY_NOT_LATIN1 = (
    "MANAGER_API_KEY has characters outside Latin-1, which an HTTP header cannot carry: "
    "copy the key again from the manager's settings."
)
MSG_KEY_WHITESPACE = (
    "MANAGER_API_KEY starts or ends with a space, tab or line break: remove it "
    "(the manager compares the key exactly)."
)
MSG_KEY_CONTROL = (
    "MANAGER_API_KEY contains control characters (such as a line break): copy it again."
)


def manager_key_problem(key: str) -> str | None:
    """Why `key` cannot be sent as the X-API-Key header, or None. The message never contains it."""
    if key != key.strip():
        return MSG_KEY_WHITESPACE
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        return MSG_KEY_CONTROL
    try:
        key.encode("latin-1")
    except UnicodeEncodeError:
        return MSG_KEY_NOT_LATIN1
    return None


def _clean(text) -> str:
    # Kept in history: cleaned as all outside text is, and bounded.
    return text_storable(text, limit=MAX_TEXT)


@sensitive_variables()
def _account_fields(account: Account) -> dict:
    fields = {
        "email": account.email or None,
        "access_token": account.access_token,
        "session_token": account.session_token,
        "refresh_token": account.refresh_token,
        "client_id": account.client_id or None,
        # Only when staff supplied it: with an account_id the manager imports a placeholder
        # Team even when ChatGPT cannot be reached (docs/MANAGER.md).
        "account_id": account.account_id or None,
    }
    return {key: value for key, value in fields.items() if value}


BATCH_SEPARATOR = "----"


@sensitive_variables()
def batch_safe(account: Account) -> bool:
    """Whether the manager reads this account's batch line back as it was sent: it has an email
    (the stream's answers are matched by it) and no field holds the separator (a token's base64url
    can hold "----": the manager would cut it there). Any other account goes single."""
    return bool(account.email) and not any(
        BATCH_SEPARATOR in value for value in _account_fields(account).values()
    )


@sensitive_variables()
def batch_line(account: Account) -> str:
    # Joined with ----: the manager's batch parser does not split on a single comma and its
    # comma fallback drops the session token (docs/MANAGER.md).
    return BATCH_SEPARATOR.join(_account_fields(account).values())


@dataclass(frozen=True)
class BatchAnswers:
    by_account: dict[int, ManagerAnswer]  # an answer for every account sent
    strays: list[str]  # stream lines that matched no account sent, redacted: kept, never credited


# What the manager's batch stream says for a line that named no account_id.
_NO_ACCOUNT_ID = "未指定"


def _stream_line_matches(account: Account, result: dict) -> bool:
    """Whether a stream line is this account's: its email matched; its account_id must match too.

    The pool holds one email more than once for different workspaces (account_id), and the
    manager keeps only the first line of an email, so the email alone can credit the wrong one.
    """
    answered = str(result.get("account_id") or "").strip().lower()
    if account.account_id:
        return answered == account.account_id.strip().lower()
    return answered in ("", _NO_ACCOUNT_ID)


def _stray(result: dict) -> str:
    text = result.get("message") if result.get("success") else result.get("error")
    return _clean(
        f"{result.get('email')} {result.get('account_id')} success={result.get('success')}: {text}"
    )


# What one Team-info answer means (deciding what to record is follow_up's job).
TEAM_OK = "ok"  # the manager's record of the Team, below
TEAM_GONE = "gone"  # 404: the manager has no such Team (any more)
TEAM_CONFIG_ERROR = "config_error"  # 401/403 or a redirect to the login page: wrong key or URL
TEAM_UNKNOWN = "unknown"  # 5xx, timeout, dropped connection, unreadable answer: ask again later
TEAM_STATUSES = frozenset({"active", "full", "expired", "error", "banned"})


@dataclass(frozen=True)
class TeamInfo:
    """The few fields of the manager's Team record this pool keeps. Never a token."""

    state: str  # one of the TEAM_* names
    http_status: int | None
    failure: str = ""
    status: str = ""  # the manager's status, one of TEAM_STATUSES (state ok only)
    current_members: int | None = None
    max_members: int | None = None
    expires_at: datetime | None = None
    last_sync: datetime | None = None
    duration_ms: int = 0


def _count(value) -> int | None:
    return (
        value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31
        else None
    )


def _moment(value) -> datetime | None:
    """A time from the manager's record (ISO 8601; naive means UTC, as the manager stores it)."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _read_team_info(response) -> TeamInfo:
    status = response.status_code
    if 300 <= status < 400 or status in (401, 403):
        return TeamInfo(TEAM_CONFIG_ERROR, status, FAILURE_REDIRECT if status < 400 else "")
    if status == 404:
        return TeamInfo(TEAM_GONE, status)
    try:
        body = response.json()
    except ValueError:
        return TeamInfo(TEAM_UNKNOWN, status, FAILURE_UNREADABLE)
    team = body.get("team") if isinstance(body, dict) else None
    if status != 200 or not isinstance(team, dict) or body.get("success") is not True:
        return TeamInfo(TEAM_UNKNOWN, status, FAILURE_UNREADABLE)
    team_status = team.get("status")
    if team_status not in TEAM_STATUSES:
        return TeamInfo(TEAM_UNKNOWN, status, FAILURE_UNREADABLE)
    return TeamInfo(
        TEAM_OK,
        status,
        status=team_status,
        current_members=_count(team.get("current_members")),
        max_members=_count(team.get("max_members")),
        expires_at=_moment(team.get("expires_at")),
        last_sync=_moment(team.get("last_sync")),
    )


@dataclass(frozen=True)
class ProbeResult:
    state: str  # one of the PROBE_* names
    http_status: int | None
    text: str  # the manager's text or our failure, redacted
    duration_ms: int


class ManagerClient:
    @sensitive_variables("api_key")
    def __init__(self, *, base_url: str, api_key: str, connect_timeout: float, read_timeout: float):
        self.base = base_url.rstrip("/")
        self.url = self.base + IMPORT_PATH
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        # A key that cannot be a header is never handed to requests, whose errors would quote it:
        # every call answers with this problem instead, and nothing is sent.
        self.key_problem = manager_key_problem(api_key)
        self.session.headers.update({"Accept": "application/json"})
        if self.key_problem is None:
            self.session.headers["X-API-Key"] = api_key

    @classmethod
    def from_settings(cls) -> ManagerClient:
        return cls(
            base_url=settings.MANAGER_BASE_URL,
            api_key=settings.MANAGER_API_KEY,
            connect_timeout=settings.MANAGER_CONNECT_TIMEOUT,
            read_timeout=settings.MANAGER_READ_TIMEOUT,
        )

    def close(self) -> None:
        self.session.close()

    def _post(self, body: dict, *, stream: bool = False):
        return self.session.post(
            self.url, json=body, timeout=self.timeout, allow_redirects=False, stream=stream
        )

    def probe(self) -> ProbeResult:
        """Whether the manager answers and accepts the key, importing nothing.

        The manager checks the key before the body: a right key with an unknown import_type gets
        400 "无效的导入类型", a wrong one 401 (docs/MANAGER.md); a redirect is the login
        page a wrong key is sent to.
        """
        started = time.monotonic()
        if self.key_problem:
            return ProbeResult(PROBE_KEY_REFUSED, None, self.key_problem, 0)
        timeout = (self.timeout[0], min(self.timeout[1], PROBE_READ_TIMEOUT))
        try:
            response = self.session.post(
                self.url, json={"import_type": "probe"}, timeout=timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            return ProbeResult(PROBE_UNREACHABLE, None, _clean(exc), _elapsed_ms(started))
        answer = _read_single(response)
        if answer.http_status == 400 and _INVALID_IMPORT_TYPE_RE.search(answer.text):
            state = PROBE_OK
        elif answer.http_status in (401, 403) or answer.failure == FAILURE_REDIRECT:
            state = PROBE_KEY_REFUSED
        else:
            state = PROBE_UNEXPECTED
        return ProbeResult(state, answer.http_status, answer.text, _elapsed_ms(started))

    def team_info(self, team_id: int) -> TeamInfo:
        """What the manager's own record says of one Team (GET /admin/teams/{id}/info).

        The answer carries the Team's decrypted tokens: only the fields of TeamInfo are read
        from it, and the rest of the body is dropped here, before anything can log or store it.
        """
        started = time.monotonic()
        url = self.base + TEAM_INFO_PATH.format(team_id=int(team_id))
        try:
            response = self.session.get(url, timeout=self.timeout, allow_redirects=False)
            info = _read_team_info(response)
        except requests.Timeout:
            info = TeamInfo(TEAM_UNKNOWN, None, FAILURE_TIMEOUT)
        except requests.RequestException:
            info = TeamInfo(TEAM_UNKNOWN, None, FAILURE_CONNECTION)
        return replace(info, duration_ms=_elapsed_ms(started))

    def import_single(self, account: Account) -> ManagerAnswer:
        started = time.monotonic()
        if self.key_problem:
            return ManagerAnswer(None, None, self.key_problem, FAILURE_BAD_KEY)
        try:
            response = self._post({"import_type": "single", **_account_fields(account)})
            answer = _read_single(response)
        except requests.Timeout as exc:
            answer = ManagerAnswer(None, None, _clean(exc), FAILURE_TIMEOUT)
        except requests.RequestException as exc:
            answer = ManagerAnswer(None, None, _clean(exc), FAILURE_CONNECTION)
        return _timed(answer, started)

    @sensitive_variables("content")
    def import_batch(self, accounts: Iterable[Account]) -> BatchAnswers:
        """One batch request; an answer per account, matched by email and account_id.

        The caller never puts two accounts with one email in a batch (the manager would keep
        only the first line); a line that matches no account sent is kept as a stray.
        """
        accounts = list(accounts)
        by_email = {account.email.lower(): account for account in accounts}
        if len(by_email) != len(accounts):
            raise ValueError("Two accounts with one email cannot share a batch.")
        answers: dict[int, ManagerAnswer] = {}
        strays: list[str] = []
        started = time.monotonic()
        if self.key_problem:
            return BatchAnswers(
                {
                    a.pk: ManagerAnswer(None, None, self.key_problem, FAILURE_BAD_KEY)
                    for a in accounts
                },
                [],
            )
        content = "\n".join(batch_line(account) for account in accounts)
        try:
            with self._post({"import_type": "batch", "content": content}, stream=True) as response:
                whole = _read_batch_refusal(response)
                if whole is not None:
                    return BatchAnswers({a.pk: _timed(whole, started) for a in accounts}, [])
                finished = False
                for raw in response.iter_lines():
                    if not raw.strip():
                        continue
                    try:
                        item = json.loads(raw)
                    except ValueError:
                        break
                    kind = item.get("type") if isinstance(item, dict) else None
                    if kind == "progress":
                        result = item.get("last_result")
                        result = result if isinstance(result, dict) else {}
                        account = by_email.get(str(result.get("email") or "").lower())
                        if (
                            account is None
                            or account.pk in answers
                            or not _stream_line_matches(account, result)
                        ):
                            strays.append(_stray(result))
                            continue
                        success = result.get("success") is True
                        text = result.get("message") if success else result.get("error")
                        team_id = _team_id(result.get("team_id")) if success else None
                        answers[account.pk] = _timed(
                            ManagerAnswer(200, success, _clean(text), team_id=team_id), started
                        )
                    elif kind == "finish":
                        finished = True
                        break
                    elif kind == "error":
                        refusal = ManagerAnswer(
                            200, False, _clean(item.get("error")), FAILURE_BATCH_REFUSED
                        )
                        return BatchAnswers(
                            {a.pk: _timed(refusal, started) for a in accounts}, strays
                        )
                missing = FAILURE_NOT_IN_STREAM if finished else FAILURE_STREAM_CUT
        except requests.Timeout as exc:
            missing, text = FAILURE_TIMEOUT, _clean(exc)
        except requests.RequestException as exc:
            missing, text = FAILURE_CONNECTION, _clean(exc)
        else:
            text = ""
        for account in accounts:
            answers.setdefault(
                account.pk, _timed(ManagerAnswer(None, None, text, missing), started)
            )
        return BatchAnswers(answers, strays)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _timed(answer: ManagerAnswer, started: float) -> ManagerAnswer:
    return replace(answer, duration_ms=int((time.monotonic() - started) * 1000))


def _team_id(value) -> int | None:
    """The manager's Team id, when it is one (a positive integer that fits a database column)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    return None


def _read_single(response) -> ManagerAnswer:
    status = response.status_code
    if 300 <= status < 400:
        return ManagerAnswer(
            status, None, _clean(response.headers.get("Location")), FAILURE_REDIRECT
        )
    try:
        body = response.json()
    except ValueError:
        return ManagerAnswer(status, None, _clean(response.text[:200]), FAILURE_UNREADABLE)
    if not isinstance(body, dict):
        return ManagerAnswer(status, None, _clean(body), FAILURE_UNREADABLE)
    success = body.get("success") if isinstance(body.get("success"), bool) else None
    text = (
        body.get("message")
        if success
        else (body.get("error") or body.get("detail") or body.get("message"))
    )
    text = _clean(text if isinstance(text, str) else json.dumps(text, ensure_ascii=False))
    return ManagerAnswer(
        status, success, text, team_id=_team_id(body.get("team_id")) if success else None
    )


def _read_batch_refusal(response) -> ManagerAnswer | None:
    """The answer for every account when the batch as a whole was not accepted, else None."""
    if response.status_code == 200:
        if "ndjson" in response.headers.get("Content-Type", ""):
            return None
        # A batch is always answered with a stream; anything else cannot be trusted either way.
        return ManagerAnswer(200, None, _clean(response.text[:200]), FAILURE_UNREADABLE)
    return _read_single(response)


def manager_configured() -> bool:
    """Whether MANAGER_BASE_URL and MANAGER_API_KEY are both set: without them nothing is sent."""
    return bool(settings.MANAGER_BASE_URL and settings.MANAGER_API_KEY)


def manager_probe() -> ProbeResult:
    """The manager's reachability and key as the dashboard shows them (ManagerClient.probe), or
    PROBE_NOT_CONFIGURED without asking anything when the settings are missing."""
    if not manager_configured():
        return ProbeResult(PROBE_NOT_CONFIGURED, None, "", 0)
    client = ManagerClient.from_settings()
    try:
        return client.probe()
    finally:
        client.close()
