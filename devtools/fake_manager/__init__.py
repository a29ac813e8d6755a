"""A fake seat manager ("team-manage") on a real loopback HTTP server, for tests and benchmarks.

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

Out of process (next to web and worker processes), ``python -m devtools.fake_manager --port 0
--api-key K`` prints ``READY http://127.0.0.1:PORT`` and serves until SIGTERM/SIGINT; the same
server answers a small control API under ``/_fake/`` (state, plan, reset), which
``FakeManagerProcess`` wraps.

The package: protocol.py (paths, texts, behaviours, how requests are read and answered),
state.py (``FakeManager``: what it holds, behind one lock), handler.py (the HTTP server),
process.py (``FakeManagerProcess``), cli.py and ``__main__.py`` (the command line); rules.py is
its reading of tokens and emails. It imports nothing from the product, nor Django, so a
misreading by the product cannot be shared by the fake that tests it
(tests/webhooks/test_fake_manager.py checks).
"""

from devtools.fake_manager.cli import main
from devtools.fake_manager.process import FakeManagerProcess
from devtools.fake_manager.protocol import (
    BEHAVIOURS,
    DEFAULT_API_KEY,
    IMPORT_PATH,
    LOGIN_PATH,
    MSG_ALREADY_PRESENT,
    MSG_EMAIL_MISMATCH,
    MSG_IMPORTED,
    MSG_INVALID_TYPE,
    MSG_NO_EMAIL,
    MSG_NO_TEAM,
    MSG_NO_TOKEN,
    MSG_NO_USABLE_AT,
    MSG_NOTHING_PARSED,
    MSG_SERVER_ERROR,
    MSG_UNAUTHORIZED,
    Behaviour,
)
from devtools.fake_manager.state import FakeManager

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
