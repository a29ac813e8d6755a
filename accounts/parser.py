"""The one reader of account material; every way of loading accounts uses it.

``parse_lines`` takes an iterable of text lines and yields one ``ParsedLine``
per non-blank physical line, as it goes, so input of any size is read in
constant memory. It never raises on bad input: problems become ``errors``
(the line is not saved) or ``warnings`` (saved, but staff should know), each
a ``Problem`` with a stable ``code`` and a lazily translated ``message``.
Duplicates are not its business: the service layer checks those.

Formats, decided as follows:

* CSV with a header row: the first non-blank line, if it contains a comma and
  names at least one known column (``email``, ``access_token``/``at``,
  ``session_token``/``st``, ``refresh_token``/``rt``, ``client_id``,
  ``account_id``, also ``邮箱`` as in the seat manager's document; case,
  spaces, dashes and underscores do not matter), makes the whole input CSV.
  The header yields no ``ParsedLine``. Columns it does not know are ignored
  and reported once, as an ``unknown_columns`` warning on the first data row
  (not as an error: the known columns are still read correctly, and a header
  line has no result to carry an error). Two columns naming the same field
  are allowed; a row filling both is a ``duplicate_field`` error.
* Otherwise each line on its own: a line with a comma is the seat manager's
  documented positional format ``email,AT,RT,ST,client_id[,account_id]``
  (empty places kept, trailing places may be left out, surplus empty places
  are tolerated); a line without a comma is the manager's own batch format,
  parts separated by ``----``, ``|``, tabs or spaces (a single space too,
  since no value contains one; also Unicode spaces such as U+3000), in any
  order and recognised by shape. A single value on its own is that format
  with one part. Tokens, emails and IDs never contain commas, so the comma
  is unambiguous.

One reason per problem, not per value: a line on which nothing is an email, a token or an ID
(a note, a sentence) gets one reason, ``unrecognised_line``, that says what a line should be;
several unrecognised parts beside recognised ones get one reason naming them all. A single
problem keeps its precise reason (the part's length and ending, the column's name, an expired
or undecodable token).

Tolerated: a UTF-8 BOM, CRLF/CR/LF line ends (also embedded in one item),
blank lines and lines holding nothing but commas and quotes (skipped, but
counted in line numbers), spaces around values, quotes around values or
around a whole positional line.

Random base64url contains ``----`` now and then (about 1 session token in
7,000). The seat manager splits such a token apart; here, neighbouring
pieces that are each unrecognised are joined back when the result is
token-shaped. A cut in a JWT's signature or a JWE's tag leaves a first piece
that is token-shaped by itself; that stays an error, since it cannot be told
from a token followed by a separate value (the comma format has no such
ambiguity). A token ending in ``-`` right before a ``----`` separator is
read correctly: the separator is the last four dashes of the run.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.utils.translation import gettext_lazy as _

from accounts.tokens import (
    AT_EXPIRED,
    AT_SHORT_LIVED,
    JWT,
    NO_USABLE_TOKEN,
    MalformedToken,
    Problem,
    decode_access_token,
    interpolate,
    is_client_id,
    is_email,
    is_refresh_token,
    is_uuid,
    jose_shape,
    mask,
    usability_problem,
)

__all__ = [
    "AT_EXPIRED",
    "AT_SHORT_LIVED",
    "BAD_COLUMN",
    "DUPLICATE_FIELD",
    "EMAIL_MISMATCH",
    "FORMAT_CSV",
    "FORMAT_DELIMITED",
    "FORMAT_POSITIONAL",
    "INVALID_ACCOUNT_ID",
    "INVALID_AT_EMAIL",
    "INVALID_CLIENT_ID",
    "INVALID_EMAIL",
    "LABEL_MAX_LENGTH",
    "LINE_TOO_LONG",
    "MALFORMED_JWT",
    "NO_TOKEN",
    "NO_USABLE_TOKEN",
    "ParsedAccount",
    "ParsedLine",
    "Problem",
    "RT_WITHOUT_CLIENT_ID",
    "TOO_MANY_COLUMNS",
    "UNKNOWN_COLUMNS",
    "UNREADABLE_ROW",
    "UNRECOGNISED_LINE",
    "UNRECOGNISED_PART",
    "label_problem",
    "notes_problem",
    "parse_lines",
]

FORMAT_POSITIONAL = "positional"
FORMAT_DELIMITED = "delimited"
FORMAT_CSV = "csv"

# Problem codes. Errors: the line is not saved.
LINE_TOO_LONG = "line_too_long"
NO_TOKEN = "no_token"
MALFORMED_JWT = "malformed_jwt"
EMAIL_MISMATCH = "email_mismatch"
UNRECOGNISED_PART = "unrecognised_part"
# Nothing on the line is an email, a token or an ID: one reason for the whole line.
UNRECOGNISED_LINE = "unrecognised_line"
DUPLICATE_FIELD = "duplicate_field"
INVALID_EMAIL = "invalid_email"
INVALID_ACCOUNT_ID = "invalid_account_id"
INVALID_AT_EMAIL = "invalid_at_email"
INVALID_CLIENT_ID = "invalid_client_id"
# Of a batch label or an account's notes.
TEXT_TOO_LONG = "text_too_long"
BAD_CHARACTERS = "bad_characters"
BAD_COLUMN = "bad_column"
TOO_MANY_COLUMNS = "too_many_columns"
UNREADABLE_ROW = "unreadable_row"
# An error when the refresh token is the line's only token, else a warning.
RT_WITHOUT_CLIENT_ID = "rt_without_client_id"
# Warnings: the line is saved. AT_EXPIRED, AT_SHORT_LIVED and NO_USABLE_TOKEN
# (from accounts.tokens) also arrive as warnings, with usable=False.
UNKNOWN_COLUMNS = "unknown_columns"

MSG_LINE_TOO_LONG = _("The line is longer than %(limit)s characters and was not read.")
MSG_NO_TOKEN = _(
    "No token: the line needs an access token, a session token, or a refresh "
    "token with a client ID."
)
MSG_MALFORMED_JWT = _("The access token (ending %(tail)s) cannot be decoded as a JWT.")
MSG_EMAIL_MISMATCH = _(
    "The email %(email)s differs from the access token's email %(at_email)s; "
    "the seat manager refuses such accounts."
)
MSG_UNRECOGNISED_PART = _(
    "Part %(number)s (%(length)s characters, ending %(tail)s) is not "
    "recognised: expected an email, a JWT, a session token, a UUID, a refresh "
    "token (rt_…) or a client ID (app_…)."
)
MSG_UNRECOGNISED_PARTS = _(
    "Parts %(numbers)s are not recognised: expected an email, a JWT, a session token, a UUID, "
    "a refresh token (rt_…) or a client ID (app_…)."
)
MSG_UNRECOGNISED_LINE = _(
    "Not an account line: nothing on it is an email, a token or an ID. Expected one account per "
    "line, email----token…, its parts separated by ----, “|”, a tab or spaces, or by commas "
    "(email,AT,RT,ST,client_id)."
)
MSG_DUPLICATE_FIELD = _("The line has more than one %(field)s.")
MSG_TOO_MANY_JWTS = _(
    "The line has more JWT-shaped tokens than one access token and one session token."
)
MSG_PART_INVALID_EMAIL = _(
    "Part %(number)s (ending %(tail)s) contains “@” but is not a valid email address."
)
MSG_COLUMN_INVALID_EMAIL = _("%(column)s is not a valid email address.")
MSG_COLUMN_INVALID_ACCOUNT_ID = _("%(column)s is not an account ID (a UUID).")
# Translators: column is e.g. "Column 2 (access token)", expected e.g. "a JWT".
MSG_BAD_COLUMN = _("%(column)s is not %(expected)s.")
MSG_TOO_MANY_COLUMNS = _(
    "The line has %(count)s comma-separated values; this format has at most 6: "
    "email, access token, refresh token, session token, client ID, account ID."
)
MSG_CSV_TOO_MANY_COLUMNS = _(
    "The row has %(count)s values but the header names only %(expected)s columns."
)
MSG_UNREADABLE_ROW = _("The CSV row cannot be read: %(reason)s.")
MSG_RT_ONLY = _(
    "The refresh token cannot be used without a client ID (app_…), and the line has no other token."
)
MSG_RT_IGNORED = _(
    "The refresh token has no client ID (app_…), so it cannot renew the access "
    "token; it is kept but ignored."
)
MSG_INVALID_AT_EMAIL = _(
    "The access token's email claim (%(length)s characters) is not a valid email address of at "
    "most %(limit)s characters."
)
MSG_CLIENT_ID_TOO_LONG = _(
    "The client ID has %(length)s characters; at most %(limit)s are allowed."
)
MSG_LABEL_TOO_LONG = _("The label has %(length)s characters; at most %(limit)s are allowed.")
MSG_NOTES_TOO_LONG = _("The notes have %(length)s characters; at most %(limit)s are allowed.")
MSG_CONTROL_CHARACTERS = _("The text contains control characters or invalid Unicode.")
MSG_UNKNOWN_COLUMNS = _("CSV columns not recognised, ignored: %(columns)s.")
# Translators: starts a sentence; field is e.g. "access token".
MSG_POSITIONAL_COLUMN = _("Column %(number)s (%(field)s)")
MSG_CSV_COLUMN = _("Column “%(name)s”")

# Field slots of a line being read, in ParsedAccount order.
_EMAIL, _AT, _ST, _RT, _CID, _ACC = range(6)
_TOKEN_FIELDS = frozenset((_AT, _ST, _RT, _CID))
_FIELD_LABELS = (
    _("email"),
    _("access token"),
    _("session token"),
    _("refresh token"),
    _("client ID"),
    _("account ID"),
)
_EXPECTED_SHAPES = {
    _AT: _("a JWT"),
    _ST: _("a session token (a JWE or a JWT)"),
    _RT: _("a refresh token"),
    _CID: _("a client ID (app_…)"),
}
_HEADER_NAMES = {
    "email": _EMAIL,
    "邮箱": _EMAIL,
    "accesstoken": _AT,
    "at": _AT,
    "sessiontoken": _ST,
    "st": _ST,
    "refreshtoken": _RT,
    "rt": _RT,
    "clientid": _CID,
    "accountid": _ACC,
}
_HEADER_NOISE_RE = re.compile(r"[\s_-]+")
# Only a short plain name from a header is echoed back; anything else could
# be a secret that landed in the header row and is masked.
_PLAIN_HEADER_RE = re.compile(r"[^\W\d][\w .()/]{0,31}")
_TOKEN_PREFIXES = ("eyJ", "rt_", "rt-", "app_")
# "----" is the last four dashes of a run, so a token ending in "-" keeps it.
# Whitespace and "|" are split with str methods: a regex alternation over the
# 4 KB of a line is ten times slower.
_DASHES_RE = re.compile(r"----(?!-)")
_MAX_REJOINED = 8
_LINE_BREAK_RE = re.compile(r"\r\n?|\n")
_QUOTES = "\"'"
_EMPTY_ROW_CHARS = ",\"'"


@dataclass(frozen=True, slots=True)
class ParsedAccount:
    # Secrets stay out of repr, which ends up in logs and tracebacks.
    email: str | None
    access_token: str | None = dataclass_field(repr=False)
    session_token: str | None = dataclass_field(repr=False)
    refresh_token: str | None = dataclass_field(repr=False)
    client_id: str | None
    account_id: str | None
    at_email: str | None
    at_expires_at: datetime | None
    usable: bool
    unusable_reason: str = dataclass_field(repr=False)  # "" or a lazy message


@dataclass(slots=True)
class ParsedLine:
    lineno: int
    format: str
    account: ParsedAccount | None
    errors: list
    warnings: list
    # The email read from the line or its access token, also when the line is invalid (for the
    # problem list); None if there was none.
    email: str | None = None

    @property
    def valid(self) -> bool:
        return not self.errors


def _as_email(value: str) -> str | None:
    return value.lower() if is_email(value) else None


def _as_access_token(value: str) -> str | None:
    return value if jose_shape(value) == JWT else None


def _as_session_token(value: str) -> str | None:
    return value if jose_shape(value) is not None else None


def _as_refresh_token(value: str) -> str | None:
    # Older refresh tokens are opaque, so any value is accepted unless it is
    # plainly another field, which means the columns are out of order.
    if value.startswith(("eyJ", "app_")) or "@" in value or is_uuid(value):
        return None
    return value


def _as_client_id(value: str) -> str | None:
    return value if is_client_id(value) else None


def _as_account_id(value: str) -> str | None:
    return value.lower() if is_uuid(value) else None


# Per field slot: the value normalised, or None if it lacks the field's shape.
_NORMALISERS = (
    _as_email,
    _as_access_token,
    _as_session_token,
    _as_refresh_token,
    _as_client_id,
    _as_account_id,
)


class _Column(NamedTuple):
    field: int
    normalise: Callable[[str], str | None]
    # Reported when a value lacks the field's shape; built once per column
    # rather than once per bad line.
    problem: Problem


def _column(field: int, label: Any) -> _Column:
    if field == _EMAIL:
        problem = Problem(INVALID_EMAIL, interpolate(MSG_COLUMN_INVALID_EMAIL, {"column": label}))
    elif field == _ACC:
        problem = Problem(
            INVALID_ACCOUNT_ID, interpolate(MSG_COLUMN_INVALID_ACCOUNT_ID, {"column": label})
        )
    else:
        problem = Problem(
            BAD_COLUMN,
            interpolate(MSG_BAD_COLUMN, {"column": label, "expected": _EXPECTED_SHAPES[field]}),
        )
    return _Column(field, _NORMALISERS[field], problem)


# Column widths of the pool's table (accounts.models.Account): the parser refuses any longer value,
# so nothing over-long ever reaches the database. An email's length is checked by is_email.
EMAIL_MAX_LENGTH = 254
CLIENT_ID_MAX_LENGTH = 200
LABEL_MAX_LENGTH = 100
NOTES_MAX_LENGTH = 10_000

_POSITIONAL_COLUMNS = tuple(
    _column(
        field, interpolate(MSG_POSITIONAL_COLUMN, {"number": number, "field": _FIELD_LABELS[field]})
    )
    for number, field in enumerate((_EMAIL, _AT, _RT, _ST, _CID, _ACC), start=1)
)
_NO_TOKEN = Problem(NO_TOKEN, MSG_NO_TOKEN)
_UNRECOGNISED_LINE = Problem(UNRECOGNISED_LINE, MSG_UNRECOGNISED_LINE)
_RT_ONLY = Problem(RT_WITHOUT_CLIENT_ID, MSG_RT_ONLY)
_RT_IGNORED = Problem(RT_WITHOUT_CLIENT_ID, MSG_RT_IGNORED)
_TOO_MANY_JWTS = Problem(DUPLICATE_FIELD, MSG_TOO_MANY_JWTS)
_DUPLICATES = tuple(
    Problem(DUPLICATE_FIELD, interpolate(MSG_DUPLICATE_FIELD, {"field": label}))
    for label in _FIELD_LABELS
)


class _CsvLayout(NamedTuple):
    columns: tuple  # of _Column, or None for an ignored column
    warning: Problem | None


def _clean(value: str) -> str:
    value = value.strip()
    if value and (value[0] in _QUOTES or value[-1] in _QUOTES):
        value = value.strip(_QUOTES).strip()
    return value


def _read_columns(columns: Iterable, cells: list, slots: list, errors: list) -> bool:
    """Fill slots from cells; return whether a would-be token was rejected."""
    token_rejected = False
    for column, raw in zip(columns, cells):
        if column is None:
            continue
        value = _clean(raw)
        if not value:
            continue
        field, normalise, problem = column
        normalised = normalise(value)
        if normalised is None:
            errors.append(problem)
            token_rejected = token_rejected or field in _TOKEN_FIELDS
        elif slots[field] is not None:
            errors.append(_DUPLICATES[field])
        else:
            slots[field] = normalised
    return token_rejected


def _read_positional(s: str) -> tuple[list, list, bool]:
    first = s[0]
    if first in _QUOTES and s[-1] == first and s.count(first) == 2:
        s = s[1:-1]
    cells = s.split(",")
    slots = [None] * 6
    errors = []
    if len(cells) > 6 and any(_clean(cell) for cell in cells[6:]):
        errors.append(
            Problem(TOO_MANY_COLUMNS, interpolate(MSG_TOO_MANY_COLUMNS, {"count": len(cells)}))
        )
    token_rejected = _read_columns(_POSITIONAL_COLUMNS, cells, slots, errors)
    return slots, errors, token_rejected


def _split_parts(s: str, *, rejoin: bool = False) -> list[str]:
    if "|" in s:
        s = s.replace("|", " ")
    parts = []
    if rejoin:
        for word in s.split():
            parts += _rejoin_dashes(_DASHES_RE.split(word))
    else:
        for chunk in _DASHES_RE.split(s):
            # Usually a chunk is one token; finding no tab or space costs far
            # less than split() scanning 2 KB for any Unicode whitespace.
            if chunk.isascii() and " " not in chunk and "\t" not in chunk:
                parts.append(chunk)
            else:
                parts += chunk.split()
    return parts


def _recognised(piece: str) -> bool:
    piece = piece.strip(_QUOTES)
    if piece.startswith("eyJ"):
        return jose_shape(piece) is not None
    # Anything with "@" is an email, good or bad, and never part of a token.
    return "@" in piece or is_refresh_token(piece) or is_client_id(piece) or is_uuid(piece)


def _rejoin_dashes(pieces: list[str]) -> list[str]:
    """Put back together a JWT or JWE that "----" cut apart (see the module
    docstring). Only neighbouring pieces that are each unrecognised are
    joined, and only into a token-shaped whole, so a separate value is never
    swallowed."""
    joined = []
    count = len(pieces)
    i = 0
    while i < count:
        end = i
        if not _recognised(pieces[i]):
            end = i + 1
            # A token holds "----" a few times at most; the bound keeps a
            # line of dashes from costing quadratic time.
            while end < count and end - i < _MAX_REJOINED and not _recognised(pieces[end]):
                end += 1
            while end > i + 1 and jose_shape("----".join(pieces[i:end]).strip(_QUOTES)) is None:
                end -= 1
        if end > i + 1:
            joined.append("----".join(pieces[i:end]))
            i = end
        else:
            joined.append(pieces[i])
            i += 1
    return joined


def _read_delimited(s: str) -> tuple[list, list, bool]:
    slots, errors, token_rejected = _classify_parts(_split_parts(s))
    if token_rejected and "----" in s:
        slots, errors, token_rejected = _classify_parts(_split_parts(s, rejoin=True))
    return slots, errors, token_rejected


def _classify_parts(parts: list[str]) -> tuple[list, list, bool]:
    slots = [None] * 6
    errors = []
    token_rejected = False
    number = 0
    unrecognised: list[tuple[int, str]] = []  # (part number, part)
    first_unrecognised = 0  # where its reason goes among the line's errors
    for raw in parts:
        part = raw.strip(_QUOTES)
        if not part:
            continue
        number += 1
        if part.startswith("eyJ"):
            shape = jose_shape(part)
            if shape is not None:
                # As the seat manager reads it: the first JWT is the access
                # token, a second one (or a JWE) the session token.
                if shape == JWT and slots[_AT] is None:
                    slots[_AT] = part
                elif slots[_ST] is None:
                    slots[_ST] = part
                else:
                    errors.append(_TOO_MANY_JWTS)
                continue
        elif "@" in part:
            # Checked before the token prefixes: rt_ops@example.com is an email.
            if not is_email(part):
                errors.append(
                    Problem(
                        INVALID_EMAIL,
                        interpolate(MSG_PART_INVALID_EMAIL, {"number": number, "tail": mask(part)}),
                    )
                )
            elif slots[_EMAIL] is None:
                slots[_EMAIL] = part.lower()
            else:
                errors.append(_DUPLICATES[_EMAIL])
            continue
        else:
            field = None
            if part.startswith(("rt_", "rt-")):
                if is_refresh_token(part):
                    field = _RT
            elif part.startswith("app_"):
                if is_client_id(part):
                    field = _CID
            elif len(part) == 36 and is_uuid(part):
                field = _ACC
                part = part.lower()
            if field is not None:
                if slots[field] is None:
                    slots[field] = part
                else:
                    errors.append(_DUPLICATES[field])
                continue
        token_rejected = True
        if not unrecognised:
            first_unrecognised = len(errors)
        unrecognised.append((number, part))
    if len(errors) + len(unrecognised) >= 2 and not _recognised_any(slots):
        return slots, [_UNRECOGNISED_LINE], token_rejected  # see _one_reason
    if len(unrecognised) == 1:
        number, part = unrecognised[0]
        problem = Problem(
            UNRECOGNISED_PART,
            interpolate(
                MSG_UNRECOGNISED_PART, {"number": number, "length": len(part), "tail": mask(part)}
            ),
        )
        errors.insert(first_unrecognised, problem)
    elif unrecognised:
        # One reason naming every part it concerns, not one per part.
        numbers = ", ".join(str(number) for number, _ in unrecognised)
        problem = Problem(
            UNRECOGNISED_PART, interpolate(MSG_UNRECOGNISED_PARTS, {"numbers": numbers})
        )
        errors.insert(first_unrecognised, problem)
    return slots, errors, token_rejected


def _shown_header(name: str) -> str:
    if _PLAIN_HEADER_RE.fullmatch(name) and not name.startswith(_TOKEN_PREFIXES):
        return name
    return mask(name)


def _read_header(s: str) -> _CsvLayout | None:
    """The CSV layout the line declares, or None if it is not a header."""
    try:
        cells = next(csv.reader((s,)))
    except csv.Error:
        return None
    fields = []
    unknown = []
    for cell in cells:
        name = _clean(cell)
        field = _HEADER_NAMES.get(_HEADER_NOISE_RE.sub("", name.lower()))
        fields.append(field)
        if field is None and name:
            unknown.append(_shown_header(name))
    if all(field is None for field in fields):
        return None
    columns = tuple(
        (
            None
            if field is None
            else _column(field, interpolate(MSG_CSV_COLUMN, {"name": _shown_header(_clean(cell))}))
        )
        for field, cell in zip(fields, cells)
    )
    warning = None
    if unknown:
        warning = Problem(
            UNKNOWN_COLUMNS, interpolate(MSG_UNKNOWN_COLUMNS, {"columns": ", ".join(unknown)})
        )
    return _CsvLayout(columns, warning)


def _read_csv_row(s: str, layout: _CsvLayout) -> tuple[list, list, bool]:
    slots = [None] * 6
    try:
        cells = next(csv.reader((s,)))
    except csv.Error as exc:
        # Only the field size limit trips the default dialect; the reason
        # names the limit, never the content.
        problem = Problem(UNREADABLE_ROW, interpolate(MSG_UNREADABLE_ROW, {"reason": str(exc)}))
        return slots, [problem], True
    errors = []
    width = len(layout.columns)
    if len(cells) > width and any(_clean(cell) for cell in cells[width:]):
        errors.append(
            Problem(
                TOO_MANY_COLUMNS,
                interpolate(MSG_CSV_TOO_MANY_COLUMNS, {"count": len(cells), "expected": width}),
            )
        )
    token_rejected = _read_columns(layout.columns, cells, slots, errors)
    return slots, errors, token_rejected


def _one_reason(slots: list, errors: list) -> list:
    """One reason for a line on which nothing was recognised, rather than one per value: a line of
    plain text split into a dozen parts used to get a dozen "Part N is not recognised" messages.

    Only with two or more problems: a single one is already one reason, and the most precise
    (a lone truncated token is told by its length and ending, a bad column by its name).
    """
    if len(errors) >= 2 and not _recognised_any(slots):
        return [_UNRECOGNISED_LINE]
    return errors


def _recognised_any(slots: list) -> bool:
    """Whether the line held anything of an account's shape. A column read as a refresh token
    takes any value (older ones are opaque), so it counts only if it looks like one (rt_…)."""
    return any(
        value is not None and (field != _RT or is_refresh_token(value))
        for field, value in enumerate(slots)
    )


def _finish(
    lineno: int,
    fmt: str,
    slots: list,
    errors: list,
    token_rejected: bool,
    now: datetime,
    min_at_lifetime: timedelta,
) -> ParsedLine:
    errors = _one_reason(slots, errors)
    if errors and errors[0] is _UNRECOGNISED_LINE:
        return ParsedLine(lineno, fmt, None, errors, [], None)  # the one reason, nothing to add
    email, at, st, rt, cid, account_id = slots
    warnings = []
    at_email = at_expires_at = None
    if at is not None:
        try:
            at_email, at_expires_at = decode_access_token(at, shape_checked=True)
        except MalformedToken:
            errors.append(
                Problem(MALFORMED_JWT, interpolate(MSG_MALFORMED_JWT, {"tail": mask(at)}))
            )
        if at_email is not None and not is_email(at_email):
            # Never echoed: it is outside text of any length, and it would be sent as the email.
            errors.append(
                Problem(
                    INVALID_AT_EMAIL,
                    interpolate(
                        MSG_INVALID_AT_EMAIL, {"length": len(at_email), "limit": EMAIL_MAX_LENGTH}
                    ),
                )
            )
            at_email = None
        elif email is None:
            email = at_email
        elif at_email is not None and at_email != email:
            errors.append(
                Problem(
                    EMAIL_MISMATCH,
                    interpolate(MSG_EMAIL_MISMATCH, {"email": email, "at_email": at_email}),
                )
            )
    if cid is not None and len(cid) > CLIENT_ID_MAX_LENGTH:
        errors.append(
            Problem(
                INVALID_CLIENT_ID,
                interpolate(
                    MSG_CLIENT_ID_TOO_LONG, {"length": len(cid), "limit": CLIENT_ID_MAX_LENGTH}
                ),
            )
        )
    # When a value was rejected it may well have been the token, so "no
    # token" would only add noise to the error already given.
    if rt is not None and cid is None:
        if at is not None or st is not None:
            warnings.append(_RT_IGNORED)
        elif not token_rejected:
            errors.append(_RT_ONLY)
    elif at is None and st is None and rt is None and not token_rejected:
        errors.append(_NO_TOKEN)
    if errors:
        return ParsedLine(lineno, fmt, None, errors, warnings, email)

    problem = usability_problem(
        at_expires_at=at_expires_at,
        has_session_token=st is not None,
        has_refresh_token=rt is not None,
        has_client_id=cid is not None,
        now=now,
        min_at_lifetime=min_at_lifetime,
    )
    if problem is not None:
        warnings.append(problem)
    account = ParsedAccount(
        email,
        at,
        st,
        rt,
        cid,
        account_id,
        at_email,
        at_expires_at,
        problem is None,
        "" if problem is None else problem.message,
    )
    return ParsedLine(lineno, fmt, account, errors, warnings, email)


def _numbered_lines(lines: Iterable[str], limit: int) -> Iterator[tuple[int, str, bool]]:
    """(physical line number, text without line end, too long) per line.

    Items are normally one line each, but an item holding several (CR-only
    files read by a reader that splits on LF, or pasted text passed whole)
    is split, so numbers stay those a text editor shows.
    """
    lineno = 0
    for item in lines:
        if lineno == 0:
            if not isinstance(item, str):
                raise TypeError(
                    "parse_lines() reads text lines; wrap binary input in "
                    "io.TextIOWrapper(..., encoding='utf-8-sig', newline='')"
                )
            if item.startswith("\ufeff"):
                item = item[1:]
        # Measured before any other work, so a huge line costs nothing more.
        if len(item) > limit + 2:
            lineno += 1
            yield lineno, item, True
            continue
        if item.endswith("\n"):
            item = item[:-1]
        if item.endswith("\r"):
            item = item[:-1]
        if "\r" in item or "\n" in item:
            for text in _LINE_BREAK_RE.split(item):
                lineno += 1
                yield lineno, text, len(text) > limit
        else:
            lineno += 1
            yield lineno, item, len(item) > limit


def parse_lines(
    lines: Iterable[str],
    *,
    now: datetime,
    min_at_lifetime: timedelta = timedelta(hours=9),
    max_line_length: int = 16384,
) -> Iterator[ParsedLine]:
    """Read account lines one at a time; see the module docstring for formats.

    ``now`` (timezone-aware) and ``min_at_lifetime`` judge whether an account
    that has nothing but its access token is still usable. Lines longer than
    ``max_line_length`` characters (line end excluded) are rejected unread.
    ``lines`` may also be one str holding the whole text.
    """
    if isinstance(lines, str):
        lines = io.StringIO(lines, newline="")
    too_long = Problem(LINE_TOO_LONG, interpolate(MSG_LINE_TOO_LONG, {"limit": max_line_length}))
    layout = None
    pending_warning = None
    seen_content = False
    for lineno, text, is_too_long in _numbered_lines(lines, max_line_length):
        if is_too_long:
            seen_content = True
            if layout is not None:
                fmt = FORMAT_CSV
            elif text.find(",", 0, max_line_length) != -1:
                fmt = FORMAT_POSITIONAL
            else:
                fmt = FORMAT_DELIMITED
            yield ParsedLine(lineno, fmt, None, [too_long], [])
            continue
        s = text.strip()
        if not s or not s.strip(_EMPTY_ROW_CHARS):
            continue
        if layout is not None:
            slots, errors, token_rejected = _read_csv_row(s, layout)
            line = _finish(lineno, FORMAT_CSV, slots, errors, token_rejected, now, min_at_lifetime)
            if pending_warning is not None:
                line.warnings.insert(0, pending_warning)
                pending_warning = None
            yield line
            continue
        has_comma = "," in s
        if not seen_content:
            seen_content = True
            if has_comma:
                layout = _read_header(s)
                if layout is not None:
                    pending_warning = layout.warning
                    continue
        if has_comma:
            slots, errors, token_rejected = _read_positional(s)
            fmt = FORMAT_POSITIONAL
        else:
            slots, errors, token_rejected = _read_delimited(s)
            fmt = FORMAT_DELIMITED
        yield _finish(lineno, fmt, slots, errors, token_rejected, now, min_at_lifetime)


# Control characters (tab and line ends allowed in notes only) and lone surrogates, which
# PostgreSQL refuses and no operator types.
_LABEL_BAD_RE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_NOTES_BAD_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _text_problem(value: str, *, limit: int, too_long: Any, bad: re.Pattern) -> Problem | None:
    if len(value) > limit:
        return Problem(TEXT_TOO_LONG, interpolate(too_long, {"length": len(value), "limit": limit}))
    if bad.search(value):
        return Problem(BAD_CHARACTERS, MSG_CONTROL_CHARACTERS)
    return None


def label_problem(value: str) -> Problem | None:
    """Why a batch label cannot be stored, or None: the same check for the admin, API and command."""
    return _text_problem(
        value, limit=LABEL_MAX_LENGTH, too_long=MSG_LABEL_TOO_LONG, bad=_LABEL_BAD_RE
    )


def notes_problem(value: str) -> Problem | None:
    """Why an account's notes cannot be stored, or None."""
    return _text_problem(
        value, limit=NOTES_MAX_LENGTH, too_long=MSG_NOTES_TOO_LONG, bad=_NOTES_BAD_RE
    )
