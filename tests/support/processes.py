"""Running the project as separate OS processes in tests, the way `make run` and production do.

The command lines and the starting and stopping are poolsite/processes.py's, the same ones
`make run` uses; what is here is the tests' side: the environment that points a child at the
test database and the fake manager, and waiting for what the children do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from django.db import connection

from poolsite import processes
from poolsite.processes import ROOT, free_port, manage_command

__all__ = [
    "ROOT",
    "free_port",
    "manage",
    "project_env",
    "start",
    "start_worker",
    "stop",
    "wait_for",
]


def database_url() -> str:
    """The URL of the database this test run uses, for subprocesses to share it."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def project_env(**extra: str) -> dict[str, str]:
    from django.conf import settings

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "POOL_ENCRYPTION_KEY": settings.POOL_ENCRYPTION_KEY,
        "MANAGER_BASE_URL": settings.MANAGER_BASE_URL,
        "MANAGER_API_KEY": settings.MANAGER_API_KEY,
        "MANAGER_CONNECT_TIMEOUT": str(settings.MANAGER_CONNECT_TIMEOUT),
        "MANAGER_READ_TIMEOUT": str(settings.MANAGER_READ_TIMEOUT),
        "DEBUG": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        manage_command(*args),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A child in a session of its own (stopping it stops its children too), its output kept
    for stop() to return."""
    return processes.spawn(args, env=env, capture=True)


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    return start(processes.worker_command(interval=0.1), env)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> str:
    """Stop a process (and its group); return what it printed."""
    processes.stop(process, sig, timeout)
    return process.stdout.read() if process.stdout else ""


def wait_for(
    predicate: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
