import csv
import io
import itertools
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils.functional import Promise
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from accounts import parser
from accounts.parser import (
    AT_EXPIRED,
    AT_SHORT_LIVED,
    BAD_COLUMN,
    DUPLICATE_FIELD,
    EMAIL_MISMATCH,
    FORMAT_CSV,
    FORMAT_DELIMITED,
    FORMAT_POSITIONAL,
    INVALID_ACCOUNT_ID,
    INVALID_AT_EMAIL,
    INVALID_CLIENT_ID,
    INVALID_EMAIL,
    LINE_TOO_LONG,
    MALFORMED_JWT,
    NO_TOKEN,
    NO_USABLE_TOKEN,
    RT_WITHOUT_CLIENT_ID,
    TOO_MANY_COLUMNS,
    UNKNOWN_COLUMNS,
    UNREADABLE_ROW,
    UNRECOGNISED_LINE,
    UNRECOGNISED_PART,
    ParsedAccount,
    ParsedLine,
    Problem,
    parse_lines,
)
from accounts.tokens import MSG_AT_EXPIRED, MSG_NO_USABLE_TOKEN
from devtools.fakes import (
    FIELDS,
    LINE_FORMATS,
    make_access_token,
    make_account,
    make_email,
    make_session_token,
    render_csv,
    render_line,
)
from tests.support.language import english

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ALL_CODES = {
    AT_EXPIRED,
    AT_SHORT_LIVED,
    BAD_COLUMN,
    DUPLICATE_FIELD,
    EMAIL_MISMATCH,
    INVALID_ACCOUNT_ID,
    INVALID_AT_EMAIL,
    INVALID_CLIENT_ID,
    INVALID_EMAIL,
    LINE_TOO_LONG,
    MALFORMED_JWT,
    NO_TOKEN,
    NO_USABLE_TOKEN,
    RT_WITHOUT_CLIENT_ID,
    TOO_MANY_COLUMNS,
    UNKNOWN_COLUMNS,
    UNREADABLE_ROW,
    UNRECOGNISED_LINE,
    UNRECOGNISED_PART,
}
ACCOUNT_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def parse(lines, **kwargs):
    if isinstance(lines, list):
        lines = [line if line.endswith("\n") else line + "\n" for line in lines]
    return list(parse_lines(lines, now=NOW, **kwargs))


def one(line, **kwargs):
    (result,) = parse([line], **kwargs)
    return result


def codes(problems):
    return [problem.code for problem in problems]


def account(**overrides):
    return make_account(rng=random.Random(7), now=NOW, **overrides)


@pytest.fixture
def full():
    return account()


def assert_reads_as(result, acc, *, fmt=None):
    assert result.valid, codes(result.errors)
    assert result.errors == []
    got = result.account
    assert got.email == acc["email"].lower()
    assert got.access_token == acc["access_token"]
    assert got.session_token == acc["session_token"]
    assert got.refresh_token == acc["refresh_token"]
    assert got.client_id == acc["client_id"]
    assert got.account_id == (acc["account_id"] and acc["account_id"].lower())
    if fmt is not None:
        assert result.format == fmt


# --- positional ------------------------------------------------------------------


def test_positional_full_line(full):
    result = one(render_line(full, "positional"))
    assert_reads_as(result, full, fmt=FORMAT_POSITIONAL)
    assert result.lineno == 1
    assert result.warnings == []
    got = result.account
    assert got.at_email == full["email"]
    assert got.at_expires_at == (NOW + timedelta(days=10))
    assert got.usable is True and got.unusable_reason == ""


def test_positional_with_empty_places_as_in_the_seed(full):
    line = f"{full['email']},{full['access_token']},,,"
    result = one(line)
    assert result.valid and result.format == FORMAT_POSITIONAL
    assert result.account.session_token is None and result.account.refresh_token is None
    assert result.account.client_id is None and result.account.account_id is None


def test_positional_email_filled_from_the_access_token(full):
    result = one(f",{full['access_token']},,,")
    assert result.account.email == full["email"]


def test_positional_short_lines_and_surplus_empty_places(full):
    assert one(f"{full['email']},{full['access_token']}").valid
    result = one(render_line(full, "positional") + ",,, ,")
    assert_reads_as(result, full)


def test_positional_too_many_columns(full):
    result = one(render_line(full, "positional") + ",extra")
    assert codes(result.errors) == [TOO_MANY_COLUMNS]
    assert result.account is None and not result.valid


def test_positional_tolerates_spaces_and_quotes(full):
    fields = [
        full["email"].upper(),
        full["access_token"],
        full["refresh_token"],
        full["session_token"],
        full["client_id"],
        full["account_id"].upper(),
    ]
    spaced = ", ".join(f'  "{value}" ' for value in fields)
    assert_reads_as(one(spaced), full)
    assert_reads_as(one(f"'{','.join(fields)}'"), full)
    assert_reads_as(one(f'"{",".join(fields)}"'), full)


def test_positional_refresh_token_may_be_opaque(full):
    result = one(
        f"{full['email']},{full['access_token']},legacy-opaque.refresh/token,,{full['client_id']}"
    )
    assert result.valid
    assert result.account.refresh_token == "legacy-opaque.refresh/token"


@pytest.mark.parametrize(
    "column, value, code, text",
    [
        (0, "not-an-email", INVALID_EMAIL, "Column 1 (email) is not a valid email address."),
        (1, "not-a-jwt", BAD_COLUMN, "Column 2 (access token) is not a JWT."),
        (
            1,
            make_session_token(rng=random.Random(1)),
            BAD_COLUMN,
            "Column 2 (access token) is not a JWT.",
        ),
        (
            2,
            make_session_token(rng=random.Random(1)),
            BAD_COLUMN,
            "Column 3 (refresh token) is not a refresh token.",
        ),
        (2, "someone@example.com", BAD_COLUMN, "Column 3 (refresh token) is not a refresh token."),
        (
            3,
            "rt_abc",
            BAD_COLUMN,
            "Column 4 (session token) is not a session token (a JWE or a JWT).",
        ),
        (4, "client", BAD_COLUMN, "Column 5 (client ID) is not a client ID (app_…)."),
        (5, "1234", INVALID_ACCOUNT_ID, "Column 6 (account ID) is not an account ID (a UUID)."),
    ],
)
def test_positional_value_without_its_columns_shape(full, column, value, code, text):
    places = [
        full["email"],
        full["access_token"],
        full["refresh_token"],
        full["session_token"],
        full["client_id"],
        full["account_id"],
    ]
    places[column] = value
    result = one(",".join(places))
    assert codes(result.errors) == [code]
    assert result.account is None
    with english():
        assert str(result.errors[0]) == text  # names the column, never echoes the value


# --- delimited (the manager's own format) ---------------------------------------------


@pytest.mark.parametrize("fmt", LINE_FORMATS[1:])
def test_delimited_formats(full, fmt):
    assert_reads_as(one(render_line(full, fmt)), full, fmt=FORMAT_DELIMITED)


def test_delimited_parts_in_any_order_and_mixed_separators(full):
    parts = [full[name] for name in FIELDS]
    rng = random.Random(3)
    for _ in range(20):
        rng.shuffle(parts)
        # The access token must stay the first JWT; the session token is a JWE.
        separators = [rng.choice(["----", "|", "\t", "  ", " | ", "\t\t", " ---- "]) for _ in parts]
        line = "".join(part + sep for part, sep in zip(parts, separators)).rstrip("-| \t")
        assert_reads_as(one(line), full)


@pytest.mark.parametrize("name", ["access_token", "session_token"])
def test_a_single_token_is_a_line(name):
    acc = account()
    result = one(acc[name])
    assert result.valid and result.format == FORMAT_DELIMITED
    assert getattr(result.account, name) == acc[name]
    if name == "access_token":
        assert result.account.email == acc["email"]
    else:
        assert result.account.email is None


def test_a_second_jwt_is_the_session_token():
    acc = account()
    st_jwt = make_access_token(email=acc["email"], now=NOW, rng=random.Random(9))
    result = one(f"{acc['access_token']}----{st_jwt}")
    assert result.account.access_token == acc["access_token"]
    assert result.account.session_token == st_jwt


def test_too_many_jwts_and_duplicate_fields(full):
    extra_jwt = make_access_token(email=full["email"], now=NOW, rng=random.Random(9))
    result = one(f"{full['access_token']}----{extra_jwt}----{full['session_token']}")
    assert codes(result.errors) == [DUPLICATE_FIELD]
    two_emails = one(f"{full['email']}----b@example.com----{full['session_token']}")
    assert codes(two_emails.errors) == [DUPLICATE_FIELD]
    two_sts = one(f"{full['session_token']}----{full['session_token']}")
    assert codes(two_sts.errors) == [DUPLICATE_FIELD]
    for name in ("refresh_token", "client_id", "account_id"):
        doubled = one(f"{full['session_token']}----{full[name]}----{full[name]}")
        assert codes(doubled.errors) == [DUPLICATE_FIELD], name
    with english():
        assert str(two_emails.errors[0]) == "The line has more than one email."


def test_unrecognised_part_is_named_but_masked(full):
    secret = "opaque-secret-value-XYZW"
    result = one(f"{full['email']}----{full['access_token']}----{secret}")
    assert codes(result.errors) == [UNRECOGNISED_PART]
    with english():
        message = str(result.errors[0])
    assert secret not in message
    assert "Part 3" in message and "…XYZW" in message and "24 characters" in message


def test_a_line_of_plain_text_gets_one_reason():
    # It used to get one "Part N … is not recognised" per word: seven for this line.
    result = one("Bought from the usual supplier on Friday, see notes")
    assert codes(result.errors) == [UNRECOGNISED_LINE]
    delimited = one("Bought from the usual supplier on Friday see notes | thanks")
    assert codes(delimited.errors) == [UNRECOGNISED_LINE]
    with english():
        message = str(delimited.errors[0])
    assert message.startswith("Not an account line")
    # It says what a line should be: every separator the parser accepts.
    for separator in ("----", "“|”", "a tab", "spaces", "commas"):
        assert separator in message, separator


def test_several_unrecognised_parts_beside_an_email_get_one_reason_naming_them(full):
    result = one(f"{full['email']} paid 12 dollars {full['access_token']}")
    assert codes(result.errors) == [UNRECOGNISED_PART]
    assert result.email == full["email"]  # read, and shown with the reason
    with english():
        assert str(result.errors[0]).startswith("Parts 2, 3, 4 are not recognised")


def test_precise_reasons_are_kept_beside_one_for_the_unrecognised_parts(full):
    header, payload, _ = full["access_token"].split(".")
    broken = f"{header}.{payload[:-8]}.c2ln"  # JWT-shaped, does not decode
    result = one(f"{full['email']}----junk----more-junk----{broken}")
    assert codes(result.errors) == [UNRECOGNISED_PART, MALFORMED_JWT]
    expired = one(
        "----".join([full["email"], make_access_token(email=full["email"], expires_at=NOW)])
    )
    assert expired.valid and codes(expired.warnings) == [AT_EXPIRED]


def test_invalid_email_part(full):
    result = one(f"not@an@email----{full['session_token']}")
    assert codes(result.errors) == [INVALID_EMAIL]
    with english():
        assert "Part 1" in str(result.errors[0])


def test_email_shaped_like_a_token_prefix_is_an_email(full):
    result = one(f"rt_ops@example.com----app_dev@example.com----{full['session_token']}")
    assert codes(result.errors) == [DUPLICATE_FIELD]  # two emails, not an RT and a client ID


def test_token_ending_in_a_dash_before_the_separator(full):
    at_head, at_payload, _ = full["access_token"].split(".")
    acc = dict(full, access_token=f"{at_head}.{at_payload}.c2lnbmF0dXJlcy0-")
    st_ = acc["session_token"]
    acc["session_token"] = st_[:-1] + "-"
    line = "----".join(acc[name] for name in FIELDS)
    assert "-----" in line
    assert_reads_as(one(line), acc)


@pytest.mark.parametrize("fmt", LINE_FORMATS)
@pytest.mark.parametrize("cut", ["ciphertext", "iv", "several"])
def test_session_token_containing_the_separator(full, fmt, cut):
    header, empty, iv, ciphertext, tag = full["session_token"].split(".")
    if cut == "ciphertext":
        ciphertext = ciphertext[:100] + "----" + ciphertext[100:]
    elif cut == "iv":
        iv = iv[:5] + "-----" + iv[5:]
    else:
        ciphertext = "----" + ciphertext[:50] + "--------" + ciphertext[50:] + "----"
    acc = dict(full, session_token=".".join([header, empty, iv, ciphertext, tag]))
    assert_reads_as(one(render_line(acc, fmt)), acc)


def test_separator_typed_into_an_access_token_payload():
    acc = account(session_token=None)
    header, payload, signature = acc["access_token"].split(".")
    # base64url of ASCII JSON never holds "----": this token was damaged, and
    # is read as one token that does not decode.
    damaged = f"{header}.{payload[:40]}----{payload[40:]}.{signature}"
    result = one("----".join([acc["email"], damaged]))
    assert codes(result.errors) == [MALFORMED_JWT]


def test_separator_inside_a_signature_stays_an_error_rather_than_swallowing_a_part(full):
    header, payload, signature = full["access_token"].split(".")
    at = f"{header}.{payload}.{signature[:10]}----{signature[10:]}"
    result = one(f"{full['email']}----{at}----{full['session_token']}")
    assert UNRECOGNISED_PART in codes(result.errors)
    # and an opaque value after a token is never glued onto it
    opaque = one(f"{full['email']}----{full['access_token']}----opaqueRefreshToken")
    assert codes(opaque.errors) == [UNRECOGNISED_PART]


# --- CSV ------------------------------------------------------------------------------------


def test_csv_with_header(full):
    other = account(account_id=None, email="Second@Example.com")
    text = render_csv([full, other], list(FIELDS))
    results = parse(text.splitlines(keepends=True))
    assert [r.lineno for r in results] == [2, 3]
    assert all(r.format == FORMAT_CSV for r in results)
    assert_reads_as(results[0], full)
    assert_reads_as(results[1], other)


def test_csv_header_aliases_order_and_quoting(full):
    columns = ["session_token", "client_id", "email", "refresh_token", "access_token", "account_id"]
    header = ["ST", "Client-ID", " E-Mail ", "refresh token", '"AT"', "Account_Id"]
    text = render_csv([full], columns, header=header, quoting=csv.QUOTE_ALL)
    (result,) = parse(text)
    assert_reads_as(result, full, fmt=FORMAT_CSV)


def test_csv_header_from_the_seed_document(full):
    text = (
        "邮箱,Access_Token,Refresh_Token,Session_Token,Client_ID\n"
        + render_line(full, "positional").rsplit(",", 1)[0]
        + "\n"
    )
    (result,) = parse(text)
    assert result.format == FORMAT_CSV
    assert result.account.email == full["email"]


def test_csv_unknown_columns_warned_once_on_the_first_data_row(full):
    text = (
        "notes,email,access_token,eyJsecretlookingheadervalue\nhello,"
        + ",".join([full["email"], full["access_token"], "x"])
        + "\n"
    )
    text += "bye," + ",".join([full["email"], full["access_token"], ""]) + "\n"
    first, second = parse(text)
    assert first.valid and codes(first.warnings) == [UNKNOWN_COLUMNS]
    assert second.valid and second.warnings == []
    with english():
        message = str(first.warnings[0])
    assert "notes" in message and "eyJsecretlookingheadervalue" not in message


def test_csv_row_problems(full):
    header = "email,access_token,session_token,at\n"
    rows = [
        f"{full['email']},not-a-jwt,,",
        f"{full['email']},{full['access_token']},,{full['access_token']}",
        f"{full['email']},{full['access_token']},,,surplus",
        f"{full['email']},{full['access_token']},,,,",
        ",,,",
        f"bad-email,{full['access_token']},,",
    ]
    results = parse(header + "\n".join(rows) + "\n")
    assert [(r.lineno, codes(r.errors)) for r in results] == [
        (2, [BAD_COLUMN]),
        (3, [DUPLICATE_FIELD]),
        (4, [TOO_MANY_COLUMNS]),
        (5, []),
        (7, [INVALID_EMAIL]),
    ]
    with english():
        assert str(results[0].errors[0]) == "Column “access_token” is not a JWT."


def test_csv_row_longer_than_the_csv_field_limit():
    text = "email,access_token\n" + "a@x.com," + "x" * (csv.field_size_limit() + 10) + "\n"
    (result,) = parse(text, max_line_length=10**6)
    assert codes(result.errors) == [UNREADABLE_ROW]


def test_csv_header_only_on_the_first_non_blank_line(full):
    text = (
        "\n\n  \n"
        + "email,access_token\n"
        + f"{full['email']},{full['access_token']}\n"
        + "email,access_token\n"
    )
    results = parse(text)
    assert [r.lineno for r in results] == [5, 6]
    assert results[0].valid
    # A second header row holds nothing of an account: one reason for the line, not one per column.
    assert codes(results[1].errors) == [UNRECOGNISED_LINE]


def test_a_line_without_a_known_column_is_not_a_header(full):
    results = parse(["name,phone", render_line(full, "positional")])
    assert results[0].format == FORMAT_POSITIONAL
    assert codes(results[0].errors) == [UNRECOGNISED_LINE]
    assert results[1].valid and results[1].format == FORMAT_POSITIONAL


# --- problems ----------------------------------------------------------------------


def test_no_token(full):
    for line in (
        full["email"],
        f"{full['email']},,,,{full['client_id']}",
        full["client_id"],
        f"{full['email']}----{ACCOUNT_ID}",
    ):
        result = one(line)
        assert codes(result.errors) == [NO_TOKEN], line


def test_refresh_token_without_client_id(full):
    alone = one(f"{full['email']},,{full['refresh_token']},,")
    assert codes(alone.errors) == [RT_WITHOUT_CLIENT_ID] and alone.account is None
    alone_delimited = one(full["refresh_token"])
    assert codes(alone_delimited.errors) == [RT_WITHOUT_CLIENT_ID]

    with_at = one(f"{full['email']},{full['access_token']},{full['refresh_token']},,")
    assert with_at.valid and codes(with_at.warnings) == [RT_WITHOUT_CLIENT_ID]
    assert with_at.account.refresh_token == full["refresh_token"]  # kept, not dropped

    with_client = one(f"{full['refresh_token']}----{full['client_id']}")
    assert with_client.valid and with_client.warnings == [] and with_client.account.usable


def test_malformed_access_token(full):
    at = "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2lnbmF0dXJlLXZhbHVl"
    result = one(f"{full['email']},{at},,{full['session_token']},")
    assert codes(result.errors) == [MALFORMED_JWT]
    with english():
        message = str(result.errors[0])
    assert at not in message and "…bHVl" in message


def test_email_mismatch(full):
    result = one(f"someone.else@example.com,{full['access_token']},,,")
    assert codes(result.errors) == [EMAIL_MISMATCH]
    with english():
        message = str(result.errors[0])
    assert "someone.else@example.com" in message and full["email"] in message
    # Case and spaces are not a mismatch.
    assert one(f" {full['email'].upper()} ,{full['access_token']},,,").valid


@pytest.mark.parametrize("fmt", ["positional", "dashes"])
@pytest.mark.parametrize("claim", ["a" * 300 + "@example.com", "not an address", "x@y.com\x00"])
def test_an_access_token_whose_email_claim_is_no_address_is_an_invalid_line(full, fmt, claim):
    at = make_access_token(email=claim, now=NOW)
    line = (
        f",{at},,{full['session_token']},"
        if fmt == "positional"
        else f"{at}----{full['session_token']}"
    )
    result = one(line)
    assert codes(result.errors) == [INVALID_AT_EMAIL]
    with english():
        message = str(result.errors[0])
    assert claim not in message and "254" in message


def test_a_client_id_longer_than_its_column_is_an_invalid_line(full):
    long_id = "app_" + "a" * 197
    for line in (
        f"{full['email']},{full['access_token']},{full['refresh_token']},,{long_id}",
        f"{full['access_token']}----{full['refresh_token']}----{long_id}",
    ):
        result = one(line)
        assert codes(result.errors) == [INVALID_CLIENT_ID]
    assert one(f"{full['access_token']}----{full['refresh_token']}----{long_id[:200]}").valid


@pytest.mark.parametrize(
    "check, value, code",
    [
        (parser.label_problem, "x" * 100, None),
        (parser.label_problem, "十一月 batch", None),
        (parser.label_problem, "x" * 101, parser.TEXT_TOO_LONG),
        (parser.label_problem, "a\x00b", parser.BAD_CHARACTERS),
        (parser.label_problem, "a\nb", parser.BAD_CHARACTERS),
        (parser.label_problem, "\ud800", parser.BAD_CHARACTERS),
        (parser.notes_problem, "line one\nline two\tand a tab", None),
        (parser.notes_problem, "x" * 10_001, parser.TEXT_TOO_LONG),
        (parser.notes_problem, "\udfff", parser.BAD_CHARACTERS),
    ],
)
def test_labels_and_notes_have_a_length_and_a_shape(check, value, code):
    problem = check(value)
    assert (problem.code if problem else None) == code


@pytest.mark.parametrize(
    "expires_in, code",
    [
        (-timedelta(hours=1), AT_EXPIRED),
        (timedelta(hours=5), AT_SHORT_LIVED),
        (timedelta(hours=9), AT_SHORT_LIVED),
    ],
)
def test_short_lived_access_token_is_saved_but_flagged(full, expires_in, code):
    at = make_access_token(email=full["email"], expires_at=NOW + expires_in, now=NOW)
    result = one(f"{full['email']},{at},,,")
    assert result.valid and codes(result.warnings) == [code]
    assert result.account.usable is False
    assert isinstance(result.account.unusable_reason, Promise)
    if code == AT_EXPIRED:
        assert result.account.unusable_reason is MSG_AT_EXPIRED
    # A session token, or a refresh token with its client ID, rescues it.
    assert one(f"{full['email']},{at},,{full['session_token']},").account.usable
    assert one(f"{full['email']},{at},{full['refresh_token']},,{full['client_id']}").account.usable
    # RT alone does not: flagged, and the RT warning too.
    rt_only = one(f"{full['email']},{at},{full['refresh_token']},,")
    assert (
        set(codes(rt_only.warnings)) == {code, RT_WITHOUT_CLIENT_ID} and not rt_only.account.usable
    )


def test_min_at_lifetime_is_configurable(full):
    at = make_access_token(email=full["email"], expires_at=NOW + timedelta(hours=5), now=NOW)
    assert one(at, min_at_lifetime=timedelta(hours=4)).account.usable
    assert not one(at, min_at_lifetime=timedelta(hours=6)).account.usable
    with english():
        assert "less than 6 hours" in str(one(at, min_at_lifetime=timedelta(hours=6)).warnings[0])


def test_access_token_without_expiry_is_not_usable_alone():
    at = make_access_token(email="a@x.com", now=NOW)
    header, _, signature = at.split(".")
    import base64
    import json

    payload = (
        base64.urlsafe_b64encode(
            json.dumps({"https://api.openai.com/profile": {"email": "a@x.com"}}).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    result = one(f"{header}.{payload}.{signature}")
    assert result.valid and codes(result.warnings) == [NO_USABLE_TOKEN]
    assert result.account.unusable_reason is MSG_NO_USABLE_TOKEN
    assert result.account.at_expires_at is None


def test_several_problems_on_one_line(full):
    result = one(f"not-an-email,{full['access_token']},,,,,junk")
    assert codes(result.errors) == [TOO_MANY_COLUMNS, INVALID_EMAIL]


def test_a_rejected_value_does_not_add_no_token(full):
    assert codes(one(f"{full['email']},garbage,,,").errors) == [BAD_COLUMN]
    assert codes(one(f"{full['email']}----garbage").errors) == [UNRECOGNISED_PART]
    assert codes(one("invalid@email").errors) == [INVALID_EMAIL, NO_TOKEN]


# --- line handling ---------------------------------------------------------------


def test_ten_megabyte_line_is_rejected_quickly(full):
    huge = "eyJ" + "A" * 10_000_000
    started = time.perf_counter()
    results = parse(
        [
            render_line(full, "positional"),
            huge,
            "",
            render_line(full, "delimited-tab"),
            huge.replace("A", ",", 5),
        ]
    )
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5
    assert [(r.lineno, codes(r.errors)) for r in results] == [
        (1, []),
        (2, [LINE_TOO_LONG]),
        (4, []),
        (5, [LINE_TOO_LONG]),
    ]
    assert results[1].format == FORMAT_DELIMITED and results[3].format == FORMAT_POSITIONAL
    with english():
        assert (
            str(results[1].errors[0])
            == "The line is longer than 16384 characters and was not read."
        )


def test_line_length_limit_is_exact(full):
    line = render_line(full, "positional")
    assert one(line, max_line_length=len(line)).valid
    assert codes(one(line, max_line_length=len(line) - 1).errors) == [LINE_TOO_LONG]
    assert codes(parse([line + "\r\n"], max_line_length=len(line) - 1)[0].errors) == [LINE_TOO_LONG]
    assert parse([line + "\r\n"], max_line_length=len(line))[0].valid


def test_bom_crlf_cr_blank_lines_and_line_numbers(full):
    good = render_line(full, "positional")
    text = (
        "\ufeff\r\n"
        + good
        + "\r\n   \t\r\n\r\n"
        + render_line(full, "delimited-dash")
        + "\r"
        + good
        + "\r\n,,,\n"
        + "garbage"
    )
    results = parse(io.StringIO(text, newline=""))
    assert [(r.lineno, r.valid) for r in results] == [(2, True), (5, True), (6, True), (8, False)]
    # The same text handed over whole, or as one item per LF-terminated line.
    assert [(r.lineno, r.valid) for r in parse(text)] == [
        (2, True),
        (5, True),
        (6, True),
        (8, False),
    ]
    lf_lines = io.StringIO(text.replace("\r\n", "\n"))
    assert [(r.lineno, r.valid) for r in parse(lf_lines)] == [
        (2, True),
        (5, True),
        (6, True),
        (8, False),
    ]


def test_bom_before_a_csv_header(full):
    text = "\ufeffemail,access_token\r\n" + f"{full['email']},{full['access_token']}\r\n"
    (result,) = parse(text)
    assert result.format == FORMAT_CSV and result.valid and result.lineno == 2


def test_parsing_is_streaming(full):
    line = render_line(full, "positional") + "\n"

    def endless():
        yield line
        yield "\n"
        yield "garbage\n"
        while True:
            yield line

    first_three = list(itertools.islice(parse_lines(endless(), now=NOW), 3))
    assert [r.lineno for r in first_three] == [1, 3, 4]


def test_binary_input_is_refused_clearly():
    with pytest.raises(TypeError, match="TextIOWrapper"):
        list(parse_lines([b"a@x.com,eyJ...\n"], now=NOW))


def test_secrets_are_not_in_reprs(full):
    result = one(render_line(full, "positional"))
    text = repr(result)
    for name in ("access_token", "session_token", "refresh_token"):
        assert full[name] not in text
    assert full["email"] in text
    assert repr(one("garbage").errors) == "[Problem('unrecognised_part')]"


def test_problems_are_typed():
    result = one("garbage")
    assert isinstance(result, ParsedLine)
    assert all(isinstance(p, Problem) for p in result.errors)
    assert isinstance(one(account()["session_token"]).account, ParsedAccount)
    assert parser.FORMAT_DELIMITED == "delimited"


# --- properties -----------------------------------------------------------------

LIFETIMES = [
    timedelta(days=-2),
    timedelta(seconds=-1),
    timedelta(hours=1),
    timedelta(hours=9),
    timedelta(hours=9, seconds=1),
    timedelta(days=10),
]


@st.composite
def accounts(draw):
    """Any subset of the six fields that still holds a usable kind of token."""
    rng = draw(st.randoms(use_true_random=False))
    present = draw(
        st.fixed_dictionaries({name: st.booleans() for name in FIELDS}).filter(
            lambda p: (
                p["access_token"] or p["session_token"] or (p["refresh_token"] and p["client_id"])
            )
        )
    )
    email = make_email(rng)
    if draw(st.booleans()):
        email = email.upper()
    overrides = {name: None for name, keep in present.items() if not keep}
    if present["email"]:
        overrides["email"] = email
    if present["account_id"] and draw(st.booleans()):
        overrides["account_id"] = str(uuid.UUID(int=rng.getrandbits(128))).upper()
    lifetime = draw(st.sampled_from(LIFETIMES))
    acc = make_account(rng=rng, now=NOW, lifetime=lifetime, **overrides)
    if present["session_token"] and draw(st.booleans()):
        acc["session_token"] = make_session_token(size=draw(st.integers(200, 4000)), rng=rng)
    # A "----" in a JWT's signature, a JWE's tag or a refresh token cannot be
    # told from a separator (a few accounts in a million); see the parser's docs.
    for name in ("access_token", "session_token", "refresh_token"):
        if acc[name]:
            assume("----" not in acc[name].rsplit(".", 1)[-1])
    return acc, lifetime


def expected_usable(acc, lifetime):
    return bool(
        acc["session_token"]
        or (acc["refresh_token"] and acc["client_id"])
        or (acc["access_token"] and lifetime > timedelta(hours=9))
    )


def check_round_trip(result, acc, lifetime):
    assert result.valid, (codes(result.errors), result.format)
    got = result.account
    at_email = None
    if acc["access_token"]:
        at_email = acc["email"].lower() if acc["email"] else got.at_email
        assert got.at_email is not None
        assert got.at_expires_at == (NOW + lifetime).replace(microsecond=0)
    else:
        assert got.at_email is None and got.at_expires_at is None
    assert got.email == (acc["email"].lower() if acc["email"] else at_email)
    for name in ("access_token", "session_token", "refresh_token", "client_id"):
        assert getattr(got, name) == acc[name], name
    assert got.account_id == (acc["account_id"].lower() if acc["account_id"] else None)
    assert got.usable is expected_usable(acc, lifetime)
    if got.usable:
        assert got.unusable_reason == ""
    else:
        assert isinstance(got.unusable_reason, Promise)
    expected_warnings = set()
    if acc["refresh_token"] and not acc["client_id"]:
        expected_warnings.add(RT_WITHOUT_CLIENT_ID)
    if not got.usable:
        expected_warnings.add(AT_EXPIRED if lifetime <= timedelta(0) else AT_SHORT_LIVED)
    assert set(codes(result.warnings)) == expected_warnings


@hyp_settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(accounts())
def test_round_trip_every_line_format(drawn):
    acc, lifetime = drawn
    for fmt in LINE_FORMATS:
        (result,) = parse([render_line(acc, fmt)])
        check_round_trip(result, acc, lifetime)
        assert result.format == (FORMAT_POSITIONAL if fmt == "positional" else FORMAT_DELIMITED)


@hyp_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    st.lists(accounts(), min_size=1, max_size=4),
    st.permutations(FIELDS),
    st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    st.booleans(),
)
def test_round_trip_csv(drawn, columns, quoting, crlf):
    text = render_csv([acc for acc, _ in drawn], list(columns), quoting=quoting)
    if not crlf:
        text = text.replace("\r\n", "\n")
    results = parse(text)
    assert [r.lineno for r in results] == list(range(2, len(drawn) + 2))
    for result, (acc, lifetime) in zip(results, drawn):
        assert result.format == FORMAT_CSV
        check_round_trip(result, acc, lifetime)


_SAMPLE = account()
FRAGMENTS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [_SAMPLE[name] for name in FIELDS]
        + [
            _SAMPLE["access_token"][:50],
            "eyJ",
            "eyJhbGciOiJIUzI1NiJ9.e30.",
            "rt_",
            "app_",
            "@",
            "a@x.com",
        ]
        + [
            ",",
            "----",
            "-----",
            "|",
            "\t",
            "  ",
            " ",
            '"',
            "'",
            "\r",
            "\n",
            "\r\n",
            "\ufeff",
            "\x00",
        ]
        + ["email", "at", "access_token", "Session-Token", "邮箱"]
    ),
)
lines_strategy = st.lists(st.lists(FRAGMENTS, max_size=8).map("".join), max_size=12)


@hyp_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines_strategy, st.integers(20, 20000))
def test_arbitrary_text_never_raises(lines, limit):
    text = "\n".join(lines)
    for source in (lines, text):
        results = list(parse_lines(source, now=NOW, max_line_length=limit))
        linenos = [r.lineno for r in results]
        assert linenos == sorted(set(linenos))
        assert all(1 <= n <= text.count("\n") + text.count("\r") + 1 for n in linenos)
        for r in results:
            assert r.format in (FORMAT_POSITIONAL, FORMAT_DELIMITED, FORMAT_CSV)
            assert r.valid is (not r.errors) is (r.account is not None)
            assert {p.code for p in r.errors + r.warnings} <= ALL_CODES
            # One reason for all the unrecognised parts of a line, and "not an account line" alone.
            assert codes(r.errors).count(UNRECOGNISED_PART) <= 1
            assert UNRECOGNISED_LINE not in codes(r.errors) or len(r.errors) == 1
            if r.account is not None and r.account.usable:
                assert r.account.unusable_reason == ""


@hyp_settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines_strategy)
def test_no_message_ever_shows_a_whole_secret(lines):
    secrets = [_SAMPLE[name] for name in ("access_token", "session_token", "refresh_token")]
    with english():
        for result in parse_lines(lines, now=NOW):
            for problem in result.errors + result.warnings:
                message = str(problem)
                assert not any(secret in message for secret in secrets)
                assert "%(" not in message
