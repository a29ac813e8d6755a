"""``python -m devtools.fake_manager``: serve a fake seat manager until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
import threading

from devtools.fake_manager.protocol import DEFAULT_API_KEY
from devtools.fake_manager.state import FakeManager


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.fake_manager",
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
