"""Outside text kept as a stored message is cleaned where it enters, whoever passes it."""

from poolsite.messages import message_render, message_verbatim
from poolsite.text import REDACTED

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


def test_outside_text_kept_as_a_message_keeps_no_token_and_no_nul_in_its_text_or_its_code():
    text, stored = message_verbatim(f"refused {TOKEN}\x00 here")
    assert TOKEN not in text and TOKEN not in str(stored)
    assert "\x00" not in text and "\x00" not in str(stored)
    assert message_render(stored, "") == text == f"refused {REDACTED}\ufffd here"


def test_outside_text_kept_as_a_message_is_bounded_when_asked():
    text, stored = message_verbatim("no answer " * 90, limit=500)
    assert len(text) == 500 and message_render(stored, "") == text
