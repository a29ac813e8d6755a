"""Run the web server, the worker and the reconciler as one unit for `make run`.

Ctrl-C or SIGTERM stops every child; if one child dies, the others are stopped too, so the
service is never left half up.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent


def _commands(host: str, port: str) -> list[list[str]]:
    python = sys.executable
    debug = os.environ.get("DEBUG", "").lower() in {"1", "true", "yes", "on"}
    if debug:
        web = [python, "manage.py", "runserver", f"{host}:{port}", "--noreload"]
    else:
        workers = os.environ.get("WEB_CONCURRENCY", "2")
        web = [
            python, "-m", "gunicorn", "poolsite.wsgi:application", "--bind", f"{host}:{port}",
            "--workers", workers, "--access-logfile", "-", "--graceful-timeout", "10",
        ]  # fmt: skip
    # The worker carries out replenishment runs; reconcile recovers what a killed worker leaves.
    # A 0.2 s poll (one indexed query) keeps the receipt-to-first-import time well under 1 s.
    worker = [python, "manage.py", "db_worker", "--no-startup-delay", "--interval", os.environ.get("WORKER_INTERVAL", "0.2")]
    reconcile = [python, "manage.py", "reconcile", "--every", os.environ.get("RECONCILE_EVERY", "60")]
    return [web, worker, reconcile]


def main() -> int:
    # HOST, PORT, DEBUG and WEB_CONCURRENCY may live in .env like every other setting.
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
    os.chdir(BASE_DIR)
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    children = [subprocess.Popen(cmd) for cmd in _commands(host, port)]
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"Serving on http://{host}:{port}/admin/ — Ctrl-C stops everything.", flush=True)
    status = 0
    while not stopping:
        if any(child.poll() is not None for child in children):
            status = 1
            break
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return status


if __name__ == "__main__":
    sys.exit(main())
