"""A notification service stand-in for the alert tests."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """A Bark server stand-in on a loopback port: records every JSON post, answers `status`."""

    def __init__(self, status: int = 200):
        self.status = status
        self.posts: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append(json.loads(body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str = "hook", credentials: str = "") -> str:
        return f"bark://{credentials}127.0.0.1:{self._server.server_address[1]}/{path}"

    @property
    def titles(self) -> list[str]:
        return [post["title"] for post in self.posts]
