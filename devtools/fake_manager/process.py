"""The fake manager in a process of its own (``python -m devtools.fake_manager``), driven through
its control API, for tests that run the project as separate processes."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

from devtools.fake_manager.protocol import (
    CONTROL_PREFIX,
    DEFAULT_API_KEY,
    IMPORT_PATH,
)

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class FakeManagerProcess:
    """``python -m devtools.fake_manager`` as a subprocess, driven through its control API.

    For tests that run the project as separate processes (web, worker): they all reach the fake
    over HTTP, and the test inspects and scripts it the same way.
    """

    def __init__(
        self,
        api_key: str | None = DEFAULT_API_KEY,
        *,
        ready_timeout: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        self.api_key = api_key
        self.ready_timeout = ready_timeout
        self.timeout = timeout  # for each control-API call
        self._process: subprocess.Popen | None = None
        self._base_url: str | None = None

    def start(self) -> FakeManagerProcess:
        command = [sys.executable, "-m", "devtools.fake_manager", "--port", "0"]
        command += ["--no-api-key"] if self.api_key is None else ["--api-key", self.api_key]
        self._process = subprocess.Popen(
            command, cwd=_PROJECT_ROOT, stdout=subprocess.PIPE, text=True
        )
        try:
            self._base_url = self._read_ready_url()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_ready_url(self) -> str:
        # readline() blocks; a helper thread lets the wait time out if the child never gets ready.
        lines: queue.Queue[str] = queue.Queue(maxsize=1)
        threading.Thread(
            target=lambda: lines.put(self._process.stdout.readline()), daemon=True
        ).start()
        try:
            line = lines.get(timeout=self.ready_timeout)
        except queue.Empty:
            raise RuntimeError(
                f"the fake manager was not ready within {self.ready_timeout} s"
            ) from None
        if not line.startswith("READY "):
            code = self._process.poll()
            raise RuntimeError(f"the fake manager did not start (exit code {code}): {line!r}")
        return line.split(" ", 1)[1].strip()

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process.stdout.close()

    def __enter__(self) -> FakeManagerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("start the FakeManagerProcess first")
        return self._base_url

    @property
    def import_url(self) -> str:
        return self.base_url + IMPORT_PATH

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def state(self) -> dict:
        """``FakeManager.state()`` of the child: no token values."""
        response = requests.get(self.base_url + CONTROL_PREFIX + "state", timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def plan(self, behaviours: Iterable[str], default: str | None = None) -> None:
        """Script the child's next import calls (and its default, when given)."""
        request: dict[str, Any] = {"plan": list(behaviours)}
        if default is not None:
            request["default"] = default
        url = self.base_url + CONTROL_PREFIX + "plan"
        response = requests.post(url, json=request, timeout=self.timeout)
        if response.status_code == 400:
            raise ValueError(response.json()["error"])
        response.raise_for_status()

    def reset(self) -> None:
        requests.post(
            self.base_url + CONTROL_PREFIX + "reset", timeout=self.timeout
        ).raise_for_status()
