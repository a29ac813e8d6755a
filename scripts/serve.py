"""Run the web server, the worker and the reconciler as one unit for `make run`.

Ctrl-C or SIGTERM stops every child. A worker or reconciler that dies is started again after a
second: what it left behind is what `reconcile` recovers (a worker dies, for one, when SQLite's
write lock stays taken past its busy timeout). If the web server dies, or a child dies
MAX_RESTARTS times within a minute, every child is stopped and the exit status is 1, so the
service is never left half up and the operator's supervisor sees it.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent


RESTART_DELAY = 1.0
MAX_RESTARTS = 5


def _commands(host: str, port: str) -> dict[str, list[str]]:
    python = sys.executable
    debug = os.environ.get("DEBUG", "").lower() in {"1", "true", "yes", "on"}
    if debug:
        web = [python, "manage.py", "runserver", f"{host}:{port}", "--noreload"]
    else:
        workers = os.environ.get("WEB_CONCURRENCY", "2")
        web = [
            python,
            "-m",
            "gunicorn",
            "poolsite.wsgi:application",
            "--bind",
            f"{host}:{port}",
            "--workers",
            workers,
            "--access-logfile",
            "-",
            "--graceful-timeout",
            "10",
        ]
    # The worker carries out replenishment runs; reconcile recovers what a killed worker leaves.
    # A 0.2 s poll (one indexed query) keeps the receipt-to-first-import time well under 1 s.
    worker = [
        python,
        "manage.py",
        "db_worker",
        "--no-startup-delay",
        "--interval",
        os.environ.get("WORKER_INTERVAL", "0.2"),
    ]
    reconcile = [
        python,
        "manage.py",
        "reconcile",
        "--every",
        os.environ.get("RECONCILE_EVERY", "60"),
    ]
    return {"web server": web, "worker": worker, "reconciler": reconcile}


def main() -> int:
    # HOST, PORT, DEBUG and WEB_CONCURRENCY may live in .env like every other setting.
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
    os.chdir(BASE_DIR)
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    commands = _commands(host, port)
    children = {name: subprocess.Popen(cmd) for name, cmd in commands.items()}
    restarts: dict[str, list[float]] = {name: [] for name in commands}
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"Serving on http://{host}:{port}/admin/ — Ctrl-C stops everything.", flush=True)
    status = 0
    while not stopping and not status:
        for name, child in children.items():
            code = child.poll()
            if code is None:
                continue
            now = time.monotonic()
            restarts[name] = [t for t in restarts[name] if t > now - 60] + [now]
            if name == "web server" or len(restarts[name]) > MAX_RESTARTS:
                print(
                    f"The {name} exited with code {code}: stopping everything.",
                    file=sys.stderr,
                    flush=True,
                )
                status = 1
                break
            print(
                f"The {name} exited with code {code}: starting it again.",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(RESTART_DELAY)
            children[name] = subprocess.Popen(commands[name])
        time.sleep(0.2)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return status


if __name__ == "__main__":
    sys.exit(main())
