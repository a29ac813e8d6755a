"""The fake manager's HTTP side: routing, the import and Team-info endpoints, scripted faults on
the wire (dropped and cut connections, garbage, redirects), NDJSON streaming, and the control API
under /_fake/. The state it reads and changes is the FakeManager's (state.py)."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from devtools.fake_manager.protocol import (
    ANSWER_FAULTS,
    CONTROL_PREFIX,
    GARBAGE_BODY,
    IMPORT_PATH,
    LOGIN_PAGE,
    LOGIN_PATH,
    MSG_INVALID_TYPE,
    MSG_NO_TOKEN,
    MSG_NOTHING_PARSED,
    MSG_SERVER_ERROR,
    MSG_UNAUTHORIZED,
    OK,
    TEAM_INFO_RE,
    Behaviour,
    SubmittedAccount,
    account_from_body,
    decode_body,
    parse_batch,
    prefers_html,
    submitted_accounts,
    validation_errors,
)

if TYPE_CHECKING:
    from devtools.fake_manager.state import FakeManager


class Server(ThreadingHTTPServer):
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as uvicorn does
    server: Server

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
            self._send(entry, 200, LOGIN_PAGE, "text/html; charset=utf-8")
        elif match := TEAM_INFO_RE.fullmatch(path):
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
        body, json_error = decode_body(raw, self.headers.get("Content-Type"))
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
            self._send(entry, 200, LOGIN_PAGE, "text/html; charset=utf-8")
        else:
            self._send_json(404, {"detail": "Not Found"}, entry)

    # the Team-info API (docs/FOLLOW_UP.md): the manager's own record, no ChatGPT call

    def _team_info(self, entry: dict, team_id: int) -> None:
        fake = self.server.fake
        with fake._lock:
            behaviour = fake._info_plan.popleft() if fake._info_plan else OK
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
        fake._count_attempts(submitted_accounts(body))

        if behaviour.name in ANSWER_FAULTS:
            self._answer_fault(entry, behaviour)
        elif json_error is not None:
            self._send_json(422, {"detail": [json_error]}, entry)
        elif not fake._key_ok(self.headers.get("X-API-Key")):
            self._unauthorized(entry)
        elif errors := validation_errors(body):
            self._send_json(422, {"detail": errors}, entry)
        elif body["import_type"] == "single":
            account = account_from_body(body)
            if not account.has_token:
                self._send_json(400, {"success": False, "error": MSG_NO_TOKEN}, entry)
            else:
                self._single(entry, account, behaviour)
        elif body["import_type"] == "batch":
            self._batch(entry, parse_batch(body.get("content")), behaviour)
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
            self._send(entry, 200, GARBAGE_BODY, "application/json")
        else:  # redirect
            self._redirect(entry)

    def _single(self, entry: dict, account: SubmittedAccount, behaviour: Behaviour) -> None:
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

    def _batch(self, entry: dict, accounts: list[SubmittedAccount], behaviour: Behaviour) -> None:
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
        if prefers_html(self.headers.get("Accept")):
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
