"""Starting and stopping the service's processes: the web server (gunicorn), the task worker
(`manage.py db_worker`) and the reconciler (`manage.py reconcile`).

One place for their command lines and for how a child is started and stopped. Its users:
`make run` (scripts/serve.py), the tests that run the service as separate processes
(tests/support/processes.py, tests/support/proof.py) and the webhook benchmark (bench/).
It lives in the product, not in tests/, because `make run` uses it in production.

The standard library only, and no Django: scripts/serve.py imports it before any setting is read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WSGI_APPLICATION = "poolsite.wsgi:application"
LOOPBACK = "127.0.0.1"

# The children started in a session of their own: stop() signals their whole process group.
_LEADERS: weakref.WeakSet[subprocess.Popen] = weakref.WeakSet()


def manage_command(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]


def web_command(
    *,
    bind: str,
    workers: int | str,
    application: str = WSGI_APPLICATION,
    graceful_timeout: float | None = None,
    access_log: bool = False,
) -> list[str]:
    """gunicorn serving `application` (sync workers); its own defaults for what is not given."""
    command = [sys.executable, "-m", "gunicorn", application, "--bind", bind]
    command += ["--workers", str(workers)]
    if access_log:
        command += ["--access-logfile", "-"]
    if graceful_timeout is not None:
        command += ["--graceful-timeout", f"{graceful_timeout:g}"]
    return command


def worker_command(*, interval: float | str, worker_id: str | None = None) -> list[str]:
    """The task worker, polling every `interval` seconds from the moment it starts."""
    command = manage_command("db_worker", "--no-startup-delay", "--interval", str(interval))
    if worker_id is not None:
        command += ["--worker-id", worker_id]
    return command


def reconcile_command(*, every: float | str) -> list[str]:
    return manage_command("reconcile", "--every", str(every))


def spawn(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    capture: bool = False,
    own_session: bool = True,
) -> subprocess.Popen:
    """Start `command` in the project's directory.

    Its output goes to the file `log` (appended), to a pipe (`capture`, as text) or, with
    neither, where this process's goes. Not a pipe nobody reads: a chatty child stalls once it is
    full. In a session of its own (the default), a signal from stop() reaches what it forks too
    (gunicorn's workers), and a Ctrl-C in the terminal reaches only this process.
    """
    if log is not None and capture:
        raise ValueError("a child's output goes to a log file or to a pipe, not both")
    out = log.open("ab") if log is not None else subprocess.PIPE if capture else None
    try:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            text=capture,
            start_new_session=own_session,
        )
    finally:
        if log is not None:
            out.close()
    if own_session:
        _LEADERS.add(process)
    return process


def _signal(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if process in _LEADERS:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)


def stop_all(
    processes: Iterable[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    """Send `sig` to every child still running, give them `timeout` seconds in all to exit,
    then SIGKILL what is left: the child, and what remains of its process group if it leads one
    (gunicorn workers whose master is gone, say)."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            _signal(process, sig)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal(process, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    stop_all([process], sig, timeout)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now, for a child to bind."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
