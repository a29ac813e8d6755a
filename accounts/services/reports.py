"""What a load reports: each line's outcome and the counts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import DatabaseError
from django.utils.translation import gettext_lazy as _

from accounts.models import (
    UnusableReason,
)
from accounts.parser import ParsedAccount, ParsedLine
from poolsite.text import redact

logger = logging.getLogger(__name__)


MSG_DUPLICATE_IN_POOL = _("already in the pool (account #%(id)s)")
MSG_DUPLICATE_IN_UPLOAD = _("duplicate of line %(line)s")
MSG_STRICT_ABORTED = _("Nothing was saved: --strict refuses a file with invalid lines.")
MSG_CHUNK_REFUSED = _(
    "The database refused %(n)s lines (lines %(first)s to %(last)s): %(reason)s. The other lines were "
    "saved; run the batch again to retry these."
)
MSG_LINE_REFUSED = _("Not saved, the database refused its chunk: %(reason)s")


class LoadAborted(Exception):
    def __init__(self, report: LoadReport):
        super().__init__(str(MSG_STRICT_ABORTED))
        self.report = report


@dataclass(slots=True)
class LineOutcome:
    CREATED = "created"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    # Valid, but in a chunk the database refused: not saved, can be loaded again.
    FAILED = "failed"

    lineno: int
    outcome: str
    parsed: ParsedLine
    duplicate_reason: str = ""

    @property
    def account(self) -> ParsedAccount | None:
        return self.parsed.account

    @property
    def messages(self) -> list[str]:
        """Why the line was not saved, then what staff should know about it."""
        reasons = [str(p.message) for p in self.parsed.errors]
        if self.duplicate_reason:
            reasons.append(self.duplicate_reason)
        return reasons + [str(p.message) for p in self.parsed.warnings]


@dataclass
class LoadReport:
    dry_run: bool
    created: int = 0
    duplicates: int = 0
    invalid: int = 0
    flagged_unusable: int = 0
    failed: int = 0
    # Why lines failed (the first chunk the database refused), or "".
    error: str = ""
    # The physical line number read so far.
    lines_read: int = 0
    # Every line not saved or with a warning (saved lines too with keep_lines), unless the
    # caller takes them one by one as they come (on_line): a load can be huge.
    lines: list[LineOutcome] = field(default_factory=list)


def _unusable_code(parsed: ParsedLine) -> str:
    return next((p.code for p in parsed.warnings if p.code in UnusableReason.values), "")


def _database_reason(exc: DatabaseError) -> str:
    """What the database said, one line, short, with anything token-shaped removed."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text)[:300]
