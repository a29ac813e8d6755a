"""What an upload must be before the parser reads it: UTF-8 text (a byte-order mark is dropped),
with no NUL byte (binary data; PostgreSQL's text type refuses NUL too). The admin form, the API
and `manage.py load_accounts` all apply this one rule, each with its own wording."""

from __future__ import annotations

import codecs
import tempfile
from typing import BinaryIO

# Checked in pieces this size: a file of any size is checked in bounded memory.
CHECK_BLOCK_BYTES = 1 << 20


class NotText(ValueError):
    """The upload is not text: `kind` is BINARY (a NUL byte) or NOT_UTF8."""

    BINARY = "binary"
    NOT_UTF8 = "not_utf8"

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def upload_decode(*, raw: bytes) -> str:
    """The text of an upload held in memory (the form's file, the API's body), or NotText."""
    if b"\x00" in raw:
        raise NotText(NotText.BINARY)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotText(NotText.NOT_UTF8) from None


def upload_check(*, stream: BinaryIO, copy_to: BinaryIO | None = None) -> None:
    """Check a file read from `stream` (to its end) against the same rule, piece by piece, or
    raise NotText; with `copy_to`, every piece is also written there (standard input, which can
    be read only once, is checked on its way into a temporary file)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    while block := stream.read(CHECK_BLOCK_BYTES):
        if b"\x00" in block:
            raise NotText(NotText.BINARY)
        try:
            decoder.decode(block)
        except UnicodeDecodeError:
            raise NotText(NotText.NOT_UTF8) from None
        if copy_to is not None:
            copy_to.write(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise NotText(NotText.NOT_UTF8) from None


def upload_spooled(*, stream: BinaryIO) -> BinaryIO:
    """Standard input checked into a temporary file (deleted when closed), rewound."""
    spool = tempfile.TemporaryFile()
    try:
        upload_check(stream=stream, copy_to=spool)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool
