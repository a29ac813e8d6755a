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
sys.path.insert(0, str(BASE_DIR))  # run as a script: scripts/ is on the path, the project is not

from poolsite.processes import (  # noqa: E402 (needs the path above)
    manage_command,
    reconcile_command,
    spawn,
    stop_all,
    web_command,
    worker_command,
)

RESTART_DELAY = 1.0
MAX_RESTARTS = 5


def _commands(host: str, port: str) -> dict[str, list[str]]:
    debug = os.environ.get("DEBUG", "").lower() in {"1", "true", "yes", "on"}
    if debug:
        web = manage_command("runserver", f"{host}:{port}", "--noreload")
    else:
        web = web_command(
            bind=f"{host}:{port}",
            workers=os.environ.get("WEB_CONCURRENCY", "2"),
            access_log=True,
            graceful_timeout=10,
        )
    # The worker carries out replenishment runs; reconcile recovers what a killed worker leaves.
    # A 0.2 s poll (one indexed query) keeps the receipt-to-first-import time well under 1 s.
    worker = worker_command(interval=os.environ.get("WORKER_INTERVAL", "0.2"))
    reconcile = reconcile_command(every=os.environ.get("RECONCILE_EVERY", "60"))
    return {"web server": web, "worker": worker, "reconciler": reconcile}


def _start(command: list[str]) -> subprocess.Popen:
    # Unlike the tests' and the bench's children, these stay in serve.py's session and write
    # where it writes: a Ctrl-C in the terminal reaches every one of them at once, and the
    # operator's supervisor (or terminal) gets their output, the access log included.
    return spawn(command, own_session=False)


def main() -> int:
    # HOST, PORT, DEBUG and WEB_CONCURRENCY may live in .env like every other setting.
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
    os.chdir(BASE_DIR)
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    commands = _commands(host, port)
    children = {name: _start(cmd) for name, cmd in commands.items()}
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
            children[name] = _start(commands[name])
        time.sleep(0.2)
    stop_all(children.values(), signal.SIGTERM, timeout=15)
    return status


if __name__ == "__main__":
    sys.exit(main())
