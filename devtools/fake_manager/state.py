"""The fake manager's state: what it imported, its Teams, its script of behaviours and its request
log, behind one lock, with the server's lifecycle (the HTTP handling is handler.py's)."""

from __future__ import annotations

import copy
import hmac
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

from devtools.fake_manager.handler import Handler, Server
from devtools.fake_manager.protocol import (
    AT_CLOCK_SKEW,
    DEFAULT_API_KEY,
    HOST,
    IMPORT_PATH,
    MASKED_HEADERS,
    MSG_ALREADY_PRESENT,
    MSG_EMAIL_MISMATCH,
    MSG_IMPORTED,
    MSG_NO_EMAIL,
    MSG_NO_TEAM,
    MSG_NO_USABLE_AT,
    NO_BODY,
    OK,
    TEAM_INFO_RE,
    Behaviour,
    Outcome,
    SubmittedAccount,
    mask,
    redact_body,
    redact_record,
    refused,
    submitted_accounts,
)


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
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._reset_state()

    def _reset_state(self) -> None:
        self._plan: deque[Behaviour] = deque()
        self._default = OK
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
        self._server = Server((HOST, self._port), Handler)
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
                if r["method"] == "GET" and TEAM_INFO_RE.fullmatch(r["path"])
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
                    for account in submitted_accounts(body)
                    if (email := account.known_email())
                ],
                # What the fake de-duplicates on (the account ID if given, else the email).
                "identities": [
                    key for account in submitted_accounts(body) if (key := account.identity())
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
                        identity: redact_record(r) for identity, r in self._imported.items()
                    },
                    "accept_counts": self._accept_counts,
                    "attempt_counts": self._attempt_counts,
                    "requests": [{**r, "body": redact_body(r["body"])} for r in self._requests],
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
                name: mask(value) if name.lower() in MASKED_HEADERS else value
                for name, value in headers.items()
            },
            "body": None if body is NO_BODY or isinstance(body, bytes) else body,
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

    def _count_attempts(self, accounts: Iterable[SubmittedAccount]) -> None:
        identities = [identity for account in accounts if (identity := account.identity())]
        with self._lock:
            for identity in identities:
                self._attempt_counts[identity] = self._attempt_counts.get(identity, 0) + 1

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the fake stops."""
        self._stopping.wait(seconds)

    def _import_one(self, account: SubmittedAccount, behaviour: Behaviour, mode: str) -> Outcome:
        """One account through the manager's import_team_single, in its order of checks."""
        claims = account.claims()
        now = datetime.now(UTC)
        at_usable = bool(claims and claims.expires_at and claims.expires_at - now >= AT_CLOCK_SKEW)
        # The manager would renew the access token here; the fake assumes renewal succeeds.
        renewable = bool(account.session_token or (account.refresh_token and account.client_id))
        if not (at_usable or renewable):
            return refused(account.email, MSG_NO_USABLE_AT)
        # read_claims lowercases the claim; the manager compares case-insensitively.
        token_email = claims.email if claims else None
        email = account.email
        if not email:
            # After a renewal the manager reads the new token's email; the fake can only read the
            # old one, which belongs to the same account.
            email = token_email
            if not email:
                return refused(None, MSG_NO_EMAIL)
        elif token_email and token_email != email.strip().lower():
            return refused(email, MSG_EMAIL_MISMATCH.format(token_email=token_email, email=email))
        return self._land(account, email, mode, no_team=behaviour.name == "reject")

    def _land(
        self, account: SubmittedAccount, email: str, mode: str, *, no_team: bool = False
    ) -> Outcome:
        """Import the account unless the manager holds it already or it has no Team.

        "No Team" is ChatGPT's answer about the account, so after the local checks, and it
        stays true of that account: a later or concurrent import of it gets the same answer. An
        account the manager already holds still has its Team ("already present"), whatever the
        script says. So a fault schedule cannot make the fake contradict itself.
        """
        identity = SubmittedAccount(email=email, account_id=account.account_id).identity()
        # The checks and the insert share one critical section: a second accept of the same
        # identity cannot happen, however many requests race.
        with self._lock:
            if identity in self._imported:
                return refused(email, MSG_ALREADY_PRESENT)
            if no_team or identity in self._teamless:
                self._teamless.add(identity)
                return refused(email, MSG_NO_TEAM)
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
        return Outcome(200, body)

    def _batch_events(
        self, accounts: list[SubmittedAccount], behaviour: Behaviour
    ) -> Iterator[dict]:
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
