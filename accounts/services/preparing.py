"""The loader's first half: reading lines in order, hashing and sealing each account, dropping
the duplicates within the upload, and cutting the work into chunks (in a forked helper process
from the command line)."""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from accounts import crypto
from accounts.models import (
    LOOKUP_HASH_FIELDS,
    lookup_values,
)
from accounts.parser import ParsedLine
from accounts.services.reports import (
    MSG_DUPLICATE_IN_UPLOAD,
    LineOutcome,
)
from accounts.tokens import interpolate

if TYPE_CHECKING:
    from accounts.services.bulk import _Inserter

logger = logging.getLogger(__name__)


# Rows per transaction. Every SQLite commit pays for a WAL write and checkpoint, so fewer, bigger
# commits load faster (measured: 1,000 rows a commit spent 6 s of 100,000 lines in commits,
# 4,000 spent 3 s); 4,000 rows (~17 MB) still hold the write lock for only a fraction of a second.
LOAD_CHUNK = 4000


class _Pending:
    """A valid line on its way into the pool: its lookup hashes and, once sealed, its row."""

    __slots__ = ("parsed", "hashes", "every_key", "row")

    def __init__(self, parsed: ParsedLine, hashes: tuple, every_key=None, row=None):
        self.parsed = parsed
        # Stored with the row, under the newest key: LOOKUP_HASH_FIELDS in order, None if absent.
        self.hashes = hashes
        # With several keys: {field: [hash under each key]}, so rows not yet rotated still match.
        self.every_key = every_key
        # The INSERT parameters before the columns every row shares, secrets already sealed.
        self.row = row

    @property
    def digests(self) -> dict[str, str | None]:
        return dict(zip(LOOKUP_HASH_FIELDS, self.hashes))

    @property
    def lookups(self) -> dict[str, list[str]]:
        """What to compare with the pool: each present hash, under every configured key."""
        if self.every_key is not None:
            return self.every_key
        return {field: [d] for field, d in zip(LOOKUP_HASH_FIELDS, self.hashes) if d}

    def __reduce__(self):
        # What the helper process sends back: the line without its account (no plaintext leaves
        # that process) as a flat tuple, several times cheaper to pickle than the objects.
        p = self.parsed
        fields = (p.lineno, p.format, p.errors, p.warnings, p.email)
        return _revive, (*fields, self.hashes, self.every_key, self.row)


def _revive(lineno, fmt, errors, warnings, email, hashes, every_key, row) -> _Pending:
    return _Pending(ParsedLine(lineno, fmt, None, errors, warnings, email), hashes, every_key, row)


def _hasher():
    """A function of a parsed line to its _Pending, with the keys looked up once."""
    digest = crypto.digester()
    several = crypto.key_count() > 1

    def pending(parsed: ParsedLine) -> _Pending:
        a = parsed.account
        values = lookup_values(
            email=a.email,
            account_id=a.account_id,
            access_token=a.access_token,
            session_token=a.session_token,
            refresh_token=a.refresh_token,
        )
        hashes = tuple([digest(v) for v in values])
        every_key = None
        if several:
            every_key = {
                field: crypto.digests_all_keys(v)
                for field, v in zip(LOOKUP_HASH_FIELDS, values)
                if v
            }
        return _Pending(parsed, hashes, every_key)

    return pending


def _pending(parsed: ParsedLine) -> _Pending:
    return _hasher()(parsed)


class _Preparer:
    """Parses, hashes and encrypts lines, chunk by chunk, in input order.

    With `in_process` the work runs in a forked child while this process writes the previous
    chunk: parsing and sealing 100,000 lines and writing them each take several seconds, Python
    threads would serialise them on the GIL, and a second process runs them side by side on the
    second core. The child never touches the database connection, and it sends back only sealed
    rows, hashes and line outcomes: plaintext tokens stay in the process that read them.
    Everything that needs order (line numbers, duplicates within the upload) happens in the one
    preparing process.
    """

    def __init__(
        self,
        parsed_lines: Iterable[ParsedLine],
        inserter: _Inserter | None,
        *,
        in_process: bool,
        seconds: float | None = None,
    ):
        self.parsed_lines = parsed_lines
        self.inserter = inserter
        self.in_process = in_process
        # At most this long preparing and writing one chunk (in this process; None: no limit), so
        # that progress shows at least this often however slow the lines or the database are:
        # the writer leaves in `write_cost` what the last chunk cost it a line.
        self.seconds = seconds
        self.write_cost = 100e-6  # until a chunk is written: more than SQLite's ~50 µs a line
        self.child = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.child is not None:
            if self.child.is_alive():
                self.child.terminate()
            self.child.join()

    def chunks(self):
        """(pending, others, last line number) per chunk, in input order: `pending` the _Pending
        of the lines to write, `others` (parsed line, outcome, reason) of the rest."""
        if not self.in_process:
            yield from self._prepare()
            return
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        self.child = context.Process(
            target=self._child, args=(send, receive), name="account-load-prepare", daemon=True
        )
        self.child.start()
        send.close()
        with receive:
            while True:
                try:
                    kind, payload = receive.recv()
                except EOFError:
                    raise RuntimeError(
                        "The process preparing the accounts stopped unexpectedly."
                    ) from None
                if kind == "done":
                    return
                if kind == "error":
                    raise payload
                yield payload

    def _child(self, send, receive) -> None:
        # Without its copy of the reading end, the child's send fails (and it exits) as soon as
        # the parent dies, instead of blocking on a pipe nobody reads.
        receive.close()
        # The pipe's buffer is the back-pressure: the child waits while the writer is behind.
        try:
            for chunk in self._prepare():
                for parsed, _, _ in chunk[1]:
                    parsed.account = None
                send.send(("chunk", chunk))
            send.send(("done", None))
        except BaseException as exc:
            try:
                send.send(("error", exc))
            except Exception:
                send.send(("error", RuntimeError(repr(exc))))

    def _prepare(self):
        seen: dict[str, int] = {}
        pending: list[_Pending] = []
        others: list[tuple] = []
        hasher = _hasher()
        row = self.inserter.row if self.inserter is not None else None
        started = time.monotonic()
        lineno = 0
        for parsed in self.parsed_lines:
            lineno = parsed.lineno
            if parsed.errors:
                others.append((parsed, LineOutcome.INVALID, ""))
            else:
                item = hasher(parsed)
                first = None
                for d in item.hashes:
                    if d is not None and d in seen:
                        first = seen[d]
                        break
                if first is None:
                    for d in item.hashes:
                        if d is not None:
                            seen[d] = lineno
                    if row is not None:
                        item.row = row(item)
                    pending.append(item)
                else:
                    reason = str(interpolate(MSG_DUPLICATE_IN_UPLOAD, {"line": first}))
                    others.append((parsed, LineOutcome.DUPLICATE, reason))
            if (
                len(pending) >= LOAD_CHUNK
                or len(pending) + len(others) >= 4 * LOAD_CHUNK
                or (
                    self.seconds is not None
                    and time.monotonic() - started + len(pending) * self.write_cost >= self.seconds
                )
            ):
                yield pending, others, lineno
                pending, others = [], []
                started = time.monotonic()
        if pending or others:
            yield pending, others, lineno
