"""Reading the translation catalogue (locale/zh_Hans/LC_MESSAGES/django.po) without gettext
tools: shared by the catalogue's own tests and the test that renders every page in Chinese."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

PO_PATH = Path(__file__).resolve().parents[2] / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"


@dataclass
class Entry:
    msgid: str = ""
    msgctxt: str | None = None
    msgid_plural: str | None = None
    # "" for a singular msgstr, "0", "1", ... for msgstr[N].
    msgstr: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    lineno: int = 0

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.msgctxt, self.msgid)

    def __str__(self) -> str:
        ctxt = f" (context {self.msgctxt!r})" if self.msgctxt is not None else ""
        return f"line {self.lineno}: {self.msgid!r}{ctxt}"


_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    '"': '"',
    "\\": "\\",
}
_ESCAPE_RE = re.compile(r'\\([ntrabfv"\\]|[0-7]{1,3}|x[0-9a-fA-F]+)')
_KEYWORD_RE = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(".*")\s*$')
_STRING_RE = re.compile(r'^"((?:[^"\\]|\\.)*)"$')


def _unescape(text: str) -> str:
    def replace(match: re.Match) -> str:
        code = match.group(1)
        if code in _ESCAPES:
            return _ESCAPES[code]
        if code[0] == "x":
            return chr(int(code[1:], 16))
        return chr(int(code, 8))

    return _ESCAPE_RE.sub(replace, text)


def _string(literal: str, path: Path, lineno: int) -> str:
    match = _STRING_RE.match(literal.strip())
    if not match:
        raise ValueError(f"{path}:{lineno}: not a quoted PO string: {literal!r}")
    return _unescape(match.group(1))


def parse_po(path: Path) -> list[Entry]:
    """Every active entry of a .po file, the header (msgid "") first.

    Handles msgctxt, msgid, msgid_plural, msgstr and msgstr[N] with continuation lines, and
    `#,` flags. Obsolete entries (`#~`) and other comments are skipped.
    """
    entries: list[Entry] = []
    entry: Entry | None = None
    target: tuple[str, str] | None = None  # (attribute, msgstr index) the next continuation extends
    pending_flags: set[str] = set()

    def finish():
        nonlocal entry, target
        if entry is not None:
            if not entry.msgstr:
                raise ValueError(f"{path}:{entry.lineno}: entry has no msgstr")
            entries.append(entry)
        entry, target = None, None

    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            finish()
            continue
        if line.startswith("#"):
            # A comment after a msgstr starts the next entry even without a blank line.
            if entry is not None and entry.msgstr:
                finish()
            if line.startswith("#,"):
                pending_flags |= {flag.strip() for flag in line[2:].split(",") if flag.strip()}
            continue
        if line.startswith('"'):
            if target is None:
                raise ValueError(f"{path}:{lineno}: string continuation outside an entry")
            attribute, index = target
            text = _string(line, path, lineno)
            if attribute == "msgstr":
                entry.msgstr[index] += text
            else:
                setattr(entry, attribute, getattr(entry, attribute) + text)
            continue
        match = _KEYWORD_RE.match(line)
        if not match:
            raise ValueError(f"{path}:{lineno}: unexpected line: {raw!r}")
        keyword, index, literal = match.groups()
        text = _string(literal, path, lineno)
        if keyword in ("msgctxt", "msgid") and (
            entry is None or entry.msgstr or keyword == "msgctxt"
        ):
            finish()
        if entry is None:
            entry = Entry(lineno=lineno, flags=pending_flags)
            pending_flags = set()
        if keyword == "msgctxt":
            entry.msgctxt, target = text, ("msgctxt", "")
        elif keyword == "msgid":
            entry.msgid, target = text, ("msgid", "")
        elif keyword == "msgid_plural":
            entry.msgid_plural, target = text, ("msgid_plural", "")
        else:
            slot = index if index is not None else ""
            if slot in entry.msgstr:
                raise ValueError(f"{path}:{lineno}: {keyword} given twice")
            entry.msgstr[slot], target = text, ("msgstr", slot)
    finish()
    return entries


def split_header(entries: list[Entry]) -> tuple[dict[str, str], list[Entry]]:
    header = [e for e in entries if e.msgid == "" and e.msgctxt is None]
    assert len(header) == 1, 'the catalogue needs exactly one header entry (msgid "")'
    fields = {}
    for line in header[0].msgstr.get("", "").splitlines():
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip()] = value.strip()
    return fields, [e for e in entries if e is not header[0]]


# %(name)s, %(n)d, %s, %5.2f ... but not %%.
_PLACEHOLDER_RE = re.compile(
    r"%(?:\(([^)]*)\))?[#0 +\-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])"
)
