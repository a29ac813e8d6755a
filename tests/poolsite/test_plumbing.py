"""The shared plumbing: a body's declared size, a typed search term, outside text kept in history."""

import pytest
from django.test import RequestFactory

from poolsite.http import declared_length
from poolsite.search import search_term
from poolsite.text import REDACTED, text_storable


@pytest.mark.parametrize(
    "header, expected",
    [(None, 0), ("", 0), ("12", 12), ("abc", 0), ("-5", 0), ("1e3", 0), (" 7 ", 7)],
)
def test_a_declared_length_is_a_non_negative_number_or_zero(header, expected):
    request = RequestFactory().post("/", data=b"", content_type="text/plain")
    request.META.pop("CONTENT_LENGTH", None)
    if header is not None:
        request.META["CONTENT_LENGTH"] = header
    assert declared_length(request) == expected


@pytest.mark.parametrize(
    "raw, expected", [(None, ""), ("", ""), ("  Ann@Example.COM \t", "ann@example.com")]
)
def test_a_search_term_is_matched_trimmed_and_lower_case(raw, expected):
    assert search_term(raw) == expected


def test_text_kept_in_history_has_no_token_no_nul_and_is_bounded():
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    kept = text_storable(f"refused {token}\x00 end", limit=20)
    assert token not in kept and "\x00" not in kept
    assert kept == f"refused {REDACTED}\ufffd end"[:20]
    assert len(kept) == 20
    assert text_storable(None) == ""
