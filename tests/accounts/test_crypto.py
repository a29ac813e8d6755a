import json
import random

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from hypothesis import given
from hypothesis import strategies as st

from accounts import crypto
from accounts.crypto import DecryptionError
from accounts.models import Account
from accounts.tokens import mask
from devtools import fakes
from tests.factories import AccountFactory
from tests.support.keys import OTHER_KEY

CTX = "accounts_account.session_token"


def test_round_trip_with_a_fresh_nonce_each_time():
    first, second = (
        crypto.encrypt("eyJsecret", context=CTX),
        crypto.encrypt("eyJsecret", context=CTX),
    )
    assert first != second
    assert crypto.decrypt(first, context=CTX) == crypto.decrypt(second, context=CTX) == "eyJsecret"
    assert b"eyJsecret" not in first


def test_tampered_ciphertext_is_refused():
    blob = bytearray(crypto.encrypt("rt_abcdef", context=CTX))
    blob[-1] ^= 1
    with pytest.raises(DecryptionError, match=crypto.MSG_TAMPERED):
        crypto.decrypt(bytes(blob), context=CTX)


def test_value_sealed_with_an_unknown_key_is_refused(settings):
    blob = crypto.encrypt("rt_abcdef", context=CTX)
    settings.POOL_ENCRYPTION_KEY = OTHER_KEY
    with pytest.raises(DecryptionError, match="not in POOL_ENCRYPTION_KEY"):
        crypto.decrypt(blob, context=CTX)


def test_plaintext_is_never_taken_for_ciphertext():
    with pytest.raises(DecryptionError, match=crypto.MSG_NOT_CIPHERTEXT):
        crypto.decrypt(b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", context=CTX)


@pytest.mark.parametrize("value", ["", " , "])
def test_missing_key_fails_loudly(settings, value):
    settings.POOL_ENCRYPTION_KEY = value
    with pytest.raises(ImproperlyConfigured, match="POOL_ENCRYPTION_KEY is not set"):
        crypto.encrypt("x", context=CTX)


@pytest.mark.parametrize("value", ["short", "not base64 at all!!", "YWJj"])
def test_malformed_key_fails_loudly(settings, value):
    settings.POOL_ENCRYPTION_KEY = value
    with pytest.raises(ImproperlyConfigured, match="not a base64-encoded 32-byte key"):
        crypto.encrypt("x", context=CTX)


def test_newest_key_encrypts_and_every_key_decrypts(settings):
    old = crypto.encrypt("st-old", context=CTX)
    settings.POOL_ENCRYPTION_KEY = f"{OTHER_KEY},{settings.POOL_ENCRYPTION_KEY}"
    new = crypto.encrypt("st-new", context=CTX)
    assert crypto.key_id_of(new) != crypto.key_id_of(old)
    assert crypto.decrypt(old, context=CTX) == "st-old"
    assert crypto.decrypt(new, context=CTX) == "st-new"


def test_digest_is_keyed_and_stable(settings):
    first = crypto.digest("eyJtoken")
    assert first == crypto.digest("eyJtoken") and len(first) == crypto.DIGEST_HEX_CHARS
    settings.POOL_ENCRYPTION_KEY = OTHER_KEY
    assert crypto.digest("eyJtoken") != first


def _raw_rows():
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_account")
        return cursor.fetchall()


@pytest.mark.django_db
def test_database_holds_no_plaintext_token():
    account = AccountFactory()
    rows = _raw_rows()
    raw = b"".join(
        bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for v in rows[0]
    )
    for secret in (account.access_token, account.session_token, account.refresh_token):
        assert secret[-40:].encode() not in raw
        assert secret[:40].encode() not in raw
    stored = Account.objects.get(pk=account.pk)
    assert (stored.access_token, stored.session_token, stored.refresh_token) == (
        account.access_token,
        account.session_token,
        account.refresh_token,
    )


@pytest.mark.django_db
def test_reading_with_the_wrong_key_gives_a_marker_never_ciphertext_or_text(settings):
    account = AccountFactory()
    settings.POOL_ENCRYPTION_KEY = OTHER_KEY
    stored = Account.objects.get(pk=account.pk)
    for value in (stored.access_token, stored.session_token, stored.refresh_token):
        assert isinstance(value, crypto.Undecryptable) and not isinstance(value, str)
        assert value.cause == crypto.CAUSE_UNKNOWN_KEY and len(value.key_id_hex) == 8
        assert str(value) == "cannot be decrypted" and mask(value) == "cannot be decrypted"
    with pytest.raises(TypeError):
        json.dumps({"access_token": stored.access_token})  # never sent as if it were a token


@pytest.mark.django_db
def test_saving_a_row_that_cannot_be_decrypted_keeps_its_ciphertext(settings):
    account = AccountFactory()
    key = settings.POOL_ENCRYPTION_KEY
    settings.POOL_ENCRYPTION_KEY = OTHER_KEY
    stored = Account.objects.get(pk=account.pk)
    stored.notes = "looked at"
    stored.save()
    settings.POOL_ENCRYPTION_KEY = key  # the right key is back: nothing was lost
    again = Account.objects.get(pk=account.pk)
    assert (again.access_token, again.notes) == (account.access_token, "looked at")


@pytest.mark.django_db
def test_encrypted_fields_cannot_be_compared():
    with pytest.raises(TypeError, match="lookup hashes"):
        Account.objects.filter(access_token="eyJ…").exists()


def test_system_check_refuses_a_missing_key(settings):
    from accounts.checks import pool_key_check

    assert pool_key_check(None) == []
    settings.POOL_ENCRYPTION_KEY = ""
    (error,) = pool_key_check(None)
    assert error.id == "accounts.E001" and "POOL_ENCRYPTION_KEY is not set" in error.msg


def test_a_generated_key_is_32_random_bytes_in_base64url():
    import base64

    first, second = crypto.generate_key(), crypto.generate_key()
    assert first != second
    for key in (first, second):
        assert len(base64.urlsafe_b64decode(key)) == 32 and "+" not in key and "/" not in key


def test_a_key_may_be_given_without_its_base64_padding(settings):
    padded = settings.POOL_ENCRYPTION_KEY
    sealed = crypto.encrypt("secret", context=CTX)
    settings.POOL_ENCRYPTION_KEY = padded.rstrip("=")
    assert crypto.decrypt(sealed, context=CTX) == "secret"


def test_the_key_id_is_derived_from_the_key_as_documented(settings):
    """The first 4 bytes of SHA-256("pool key id" NUL key): stored with every ciphertext, so a
    change would make every stored token unreadable."""
    import base64
    import hashlib

    raw = base64.urlsafe_b64decode(settings.POOL_ENCRYPTION_KEY)
    assert (
        crypto.encrypt("x", context=CTX)[1:5]
        == hashlib.sha256(b"pool key id\x00" + raw).digest()[:4]
    )


def test_the_shortest_ciphertext_is_read_and_anything_shorter_is_not_ciphertext():
    empty = crypto.encrypt("", context=CTX)
    assert len(empty) == 1 + 4 + 12 + 16 and crypto.decrypt(empty, context=CTX) == ""
    with pytest.raises(DecryptionError, match="not ciphertext"):
        crypto.decrypt(empty[:-1], context=CTX)
    with pytest.raises(DecryptionError, match="not ciphertext"):
        crypto.decrypt(empty[:6], context=CTX)


# --- The compact format (3) -----------------------------------------------------------------

_TOKEN_TEXT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.", max_size=200
)


@given(_TOKEN_TEXT)
def test_any_text_of_the_token_alphabet_is_sealed_compact_and_opens_exactly(text):
    """Non-canonical base64url endings, empty parts, lengths that are no whole number of bytes:
    each part keeps its tail as text, so every such value comes back exactly."""
    blob = crypto.encrypt(text, context=CTX, compact=True)
    assert blob[:1] == crypto.FORMAT_V3
    assert crypto.decrypt(blob, context=CTX) == text


@given(st.text(max_size=50))
def test_any_text_at_all_opens_exactly_whatever_format_it_was_sealed_in(text):
    blob = crypto.encrypt(text, context=CTX, compact=True)
    assert blob[:1] in (crypto.FORMAT_V2, crypto.FORMAT_V3)
    assert crypto.decrypt(blob, context=CTX) == text


@pytest.mark.parametrize("text", ["a b", "rt_é", "x" * 20000, "eyJ+/="])
def test_text_that_is_not_token_shaped_is_sealed_as_it_is(text):
    blob = crypto.encrypt(text, context=CTX, compact=True)
    assert blob[:1] == crypto.FORMAT_V2 and crypto.decrypt(blob, context=CTX) == text


def test_a_compact_token_is_a_quarter_smaller_and_without_compact_nothing_changes():
    token = fakes.make_session_token(rng=random.Random(1))
    plain = crypto.encrypt(token, context=CTX)
    compact = crypto.encrypt(token, context=CTX, compact=True)
    assert plain[:1] == crypto.FORMAT_V2 and compact[:1] == crypto.FORMAT_V3
    assert len(compact) - 33 < 0.77 * (len(plain) - 33)
    assert crypto.decrypt(compact, context=CTX) == token


def test_a_value_that_does_not_come_back_exactly_is_sealed_as_it_is(monkeypatch):
    """The compact form is decoded again before sealing: should it ever differ, the text is
    stored as it is."""
    monkeypatch.setattr(crypto, "_expand", lambda data: "something else")
    blob = crypto.encrypt("eyJhbGciOiJIUzI1NiJ9", context=CTX, compact=True)
    monkeypatch.undo()
    assert blob[:1] == crypto.FORMAT_V2
    assert crypto.decrypt(blob, context=CTX) == "eyJhbGciOiJIUzI1NiJ9"


def test_the_format_byte_is_authenticated():
    """A compact value relabelled as format 2 (or the reverse) fails, never opens as bytes."""
    blob = bytearray(crypto.encrypt("eyJhbGciOiJIUzI1NiJ9", context=CTX, compact=True))
    blob[0] = crypto.FORMAT_V2[0]
    with pytest.raises(DecryptionError, match=crypto.MSG_TAMPERED):
        crypto.decrypt(bytes(blob), context=CTX)


def test_a_compact_value_under_the_newest_key_is_current_and_its_header_opens(settings):
    blob = crypto.encrypt("rt_abcd", context=CTX, compact=True)
    assert crypto.is_current(blob) and crypto.header_opens(blob[: crypto.HEADER_BYTES])
    settings.POOL_ENCRYPTION_KEY = f"{OTHER_KEY},{settings.POOL_ENCRYPTION_KEY}"
    assert not crypto.is_current(blob) and crypto.header_opens(blob[: crypto.HEADER_BYTES])
    assert crypto.decrypt(blob, context=CTX) == "rt_abcd"


def test_a_value_that_is_not_ciphertext_names_no_key():
    marker = crypto.decrypt_or_mark(b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", context=CTX)
    assert marker.cause == crypto.CAUSE_NOT_CIPHERTEXT and marker.key_id_hex == ""


def test_a_header_opens_in_a_known_format_under_a_configured_key_only(settings):
    head = crypto.encrypt("x", context=CTX)[: crypto.HEADER_BYTES]
    assert crypto.header_opens(memoryview(head))  # as the database driver hands it over
    assert crypto.header_opens(crypto.FORMAT_V1 + head[1:])
    assert not crypto.header_opens(head[:-1])
    assert not crypto.header_opens(b"\x04" + head[1:])
    settings.POOL_ENCRYPTION_KEY = OTHER_KEY
    assert not crypto.header_opens(head)
