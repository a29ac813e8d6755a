"""Encryption at rest and keyed lookup hashes for account secrets.

Tokens are bearer credentials to paid accounts, so the database only ever holds AES-256-GCM
ciphertext. Each value carries the id of the key that sealed it, so several keys can be configured
at once (newest first): the newest encrypts, all decrypt, and `rotate_pool_key` re-seals every row
with the newest. Duplicates are found without decrypting the pool, by comparing HMACs.
"""

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

# The first byte of every ciphertext. Version 1 authenticated the header alone, so a value copied
# into another column or table still opened there; version 2 also authenticates the table and
# column it was sealed for (its "context"). Version 1 values still open, anywhere, until a
# migration or `rotate_pool_key` re-seals them. Version 3 is version 2 with the text stored
# compact (see _compact): what the bulk loader writes for a token that round-trips that way.
FORMAT_V1 = b"\x01"
FORMAT_V2 = b"\x02"
FORMAT_V3 = b"\x03"
FORMAT_VERSION = FORMAT_V2  # what encrypt() writes
_FORMATS = (FORMAT_V1, FORMAT_V2, FORMAT_V3)
KEY_ID_BYTES = 4
NONCE_BYTES = 12
HEADER_BYTES = len(FORMAT_VERSION) + KEY_ID_BYTES
DIGEST_HEX_CHARS = 32  # 128 bits: plenty to tell accounts apart, half the index size of SHA-256.

MSG_NO_KEY = (
    "POOL_ENCRYPTION_KEY is not set. Run `make run` once to generate one into .env, or set it to "
    "a base64-encoded 32-byte key (python -c 'import os,base64;print(base64.urlsafe_b64encode(os.urandom(32)).decode())')."
)
MSG_BAD_KEY = "POOL_ENCRYPTION_KEY entry #%d is not a base64-encoded 32-byte key."
MSG_UNKNOWN_KEY_ID = (
    "A stored token was sealed with key id %s, which is not in POOL_ENCRYPTION_KEY. "
    "Add the key that was in use when it was stored."
)
MSG_TAMPERED = (
    "A stored token failed authentication: the ciphertext was altered, copied from another column, "
    "or the key is wrong."
)
MSG_NOT_CIPHERTEXT = "A stored token value is not ciphertext of this application."


# Why a stored value did not open (Undecryptable.cause, DecryptionError.cause).
CAUSE_UNKNOWN_KEY = "unknown_key"  # sealed with a key that is not configured
CAUSE_TAMPERED = "tampered"  # the key is configured, but the value fails authentication
CAUSE_NOT_CIPHERTEXT = "not_ciphertext"

MSG_CANNOT_BE_DECRYPTED = _("cannot be decrypted")


class DecryptionError(Exception):
    """Raised instead of ever handing ciphertext (or garbage) back as if it were a token."""

    def __init__(self, message: str, *, cause: str = CAUSE_NOT_CIPHERTEXT, key_id: bytes = b""):
        super().__init__(message)
        self.cause = cause
        self.key_id = key_id


@dataclass(frozen=True)
class Undecryptable:
    """What an encrypted field holds when no configured key opens the stored value.

    Not a str, so it can never be sent, hashed or compared as if it were a token (json, .encode,
    the lookup hashes all refuse it); it shows as "cannot be decrypted" wherever a masked token
    is shown. Saving a model that holds one writes the stored ciphertext back unchanged, so a
    save of another column never destroys a value that the right key could still open. The key
    id is not secret: it is a hash prefix of the key, stored in clear in every ciphertext.
    """

    cause: str
    key_id: bytes
    blob: bytes = field(repr=False)

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()

    def __str__(self) -> str:
        return str(MSG_CANNOT_BE_DECRYPTED)


@dataclass(frozen=True)
class _Key:
    key_id: bytes
    aead: AESGCM
    hash_key: bytes


def generate_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _decode_key(text: str, position: int) -> bytes:
    text = text.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ImproperlyConfigured(MSG_BAD_KEY % position)
    return raw


def _build_key(raw: bytes) -> _Key:
    # The key id is derived from the key, so it cannot be mislabelled by hand.
    key_id = hashlib.sha256(b"pool key id\x00" + raw).digest()[:KEY_ID_BYTES]
    hash_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"pool lookup hash v1"
    ).derive(raw)
    return _Key(key_id=key_id, aead=AESGCM(raw), hash_key=hash_key)


@lru_cache(maxsize=1)
def _keyring() -> tuple[_Key, ...]:
    entries = [part for part in settings.POOL_ENCRYPTION_KEY.split(",") if part.strip()]
    if not entries:
        raise ImproperlyConfigured(MSG_NO_KEY)
    return tuple(_build_key(_decode_key(entry, n)) for n, entry in enumerate(entries, start=1))


@receiver(setting_changed)
def _reset_keyring(*, setting, **kwargs):
    if setting == "POOL_ENCRYPTION_KEY":
        _keyring.cache_clear()


def check_keys() -> None:
    """Fail loudly at start-up rather than at the first token read."""
    _keyring()


def key_count() -> int:
    return len(_keyring())


def current_key_id() -> bytes:
    return _keyring()[0].key_id


def _associated_data(header: bytes, context: str) -> bytes:
    if header[:1] == FORMAT_V1:
        return header
    return header + b"\x00" + context.encode()


# --- Compact text (format 3) ----------------------------------------------------------------
# Tokens are base64url text (JWTs and JWEs: base64url parts joined by dots; refresh tokens:
# "rt_" and base64url, itself base64url text): 4 characters for every 3 bytes they carry. Stored
# as those bytes they take a quarter less room: 100,000 accounts of the bench's 4 KB lines write
# ~300 MB less to SQLite's WAL and database file. Each dot-separated part is stored as its
# longest prefix of whole 4-character groups, decoded, and the 0-3 characters after it as they
# are, so any text of the alphabet comes back exactly (non-canonical endings included). Anything
# else (or a part over 16 K characters) is sealed as it is, in format 2; encrypt() decodes every
# compact value again before sealing it and falls back to format 2 if it is not the same text.
_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_STD_TO_URL = bytes.maketrans(b"+/", b"-_")
_PART_MAX = 0x3FFF  # characters of one part: its decoded prefix length fits the 2-byte field


def _compact(text: str) -> bytes | None:
    """`text` as format 3 stores it, or None if it is not base64url parts joined by dots.

    Per part: 2 bytes big-endian, the decoded prefix's length in its low 14 bits and the number
    of trailing characters (0-3) in its top 2; the trailing characters; the decoded prefix.
    """
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    if raw.translate(None, _B64URL + b"."):
        return None
    out = []
    for part in raw.translate(_URL_TO_STD).split(b"."):
        cut = len(part) - len(part) % 4
        if cut > _PART_MAX:
            return None
        body = binascii.a2b_base64(part[:cut]) if cut else b""
        tail = part[cut:].translate(_STD_TO_URL)
        out.append((len(body) | len(tail) << 14).to_bytes(2, "big") + tail + body)
    return b"".join(out)


def _expand(data: bytes) -> str:
    """The text a format 3 value was compacted from (the inverse of _compact)."""
    parts = []
    i, end = 0, len(data)
    while i < end:
        field = int.from_bytes(data[i : i + 2], "big")
        size, tail_size = field & _PART_MAX, field >> 14
        tail = data[i + 2 : i + 2 + tail_size]
        body = data[i + 2 + tail_size : i + 2 + tail_size + size]
        if len(body) != size:
            raise ValueError("truncated compact text")
        parts.append(binascii.b2a_base64(body, newline=False).translate(_STD_TO_URL) + tail)
        i += 2 + tail_size + size
    return b".".join(parts).decode("ascii")


def sealer(*, context: str, compact: bool = False) -> Callable[[str], bytes]:
    """`encrypt(text, context=context, compact=compact)` as a function of the text alone, for
    sealing many values: the key, the headers and the associated data are worked out once (a
    load seals three tokens a line)."""
    key = _keyring()[0]
    aead_encrypt = key.aead.encrypt
    urandom = os.urandom
    plain = FORMAT_VERSION + key.key_id
    plain_ad = _associated_data(plain, context)
    packed = FORMAT_V3 + key.key_id
    packed_ad = _associated_data(packed, context)

    @sensitive_variables()
    def seal(plaintext: str) -> bytes:
        data = _compact(plaintext) if compact else None
        if data is not None and _expand(data) == plaintext:
            header, associated = packed, packed_ad
        else:
            header, associated, data = plain, plain_ad, plaintext.encode()
        nonce = urandom(NONCE_BYTES)
        return header + nonce + aead_encrypt(nonce, data, associated)

    return seal


@sensitive_variables()
def encrypt(plaintext: str, *, context: str, compact: bool = False) -> bytes:
    """Seal `plaintext` under the newest key, bound to `context` (the table and column it is
    stored in, "table.column"): it opens only where it was sealed for.

    With `compact`, a token is stored in format 3 (a quarter smaller) when it decodes back to
    exactly the same text; anything else in format 2, as without it.
    """
    return sealer(context=context, compact=compact)(plaintext)


def key_id_of(blob: bytes) -> bytes:
    return bytes(blob[len(FORMAT_VERSION) : HEADER_BYTES])


def is_current(blob: bytes) -> bool:
    """Sealed in a current format (2, or its compact form 3) under the newest key: nothing for a
    rotation to do."""
    head = bytes(blob[:HEADER_BYTES])
    return head[:1] in (FORMAT_V2, FORMAT_V3) and head[1:] == current_key_id()


@sensitive_variables()
def decrypt(blob: bytes, *, context: str) -> str:
    blob = bytes(blob)
    if len(blob) < HEADER_BYTES + NONCE_BYTES + 16 or blob[:1] not in _FORMATS:
        raise DecryptionError(MSG_NOT_CIPHERTEXT, cause=CAUSE_NOT_CIPHERTEXT)
    header, nonce, sealed = (
        blob[:HEADER_BYTES],
        blob[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES],
        blob[HEADER_BYTES + NONCE_BYTES :],
    )
    wanted = key_id_of(blob)
    for key in _keyring():
        if key.key_id == wanted:
            try:
                data = key.aead.decrypt(nonce, sealed, _associated_data(header, context))
            except InvalidTag:
                raise DecryptionError(MSG_TAMPERED, cause=CAUSE_TAMPERED, key_id=wanted) from None
            # The format byte is authenticated (it is part of the associated data), so a value
            # sealed compact always opens as compact, never as text.
            return _expand(data) if header[:1] == FORMAT_V3 else data.decode()
    raise DecryptionError(MSG_UNKNOWN_KEY_ID % wanted.hex(), cause=CAUSE_UNKNOWN_KEY, key_id=wanted)


@sensitive_variables()
def decrypt_or_mark(blob: bytes, *, context: str) -> str | Undecryptable:
    """The plaintext, or an Undecryptable marker when no configured key opens the value.

    For reads that must go on past one bad row (a list page, a run's batch): the caller tells
    the marker apart with isinstance, and nothing ever takes it for a token.
    """
    blob = bytes(blob)
    try:
        return decrypt(blob, context=context)
    except DecryptionError as exc:
        return Undecryptable(cause=exc.cause, key_id=exc.key_id, blob=blob)


def header_opens(head: bytes) -> bool:
    """Whether a ciphertext's clear header (its first HEADER_BYTES) names a format and a configured
    key: what a list can tell of a token without decrypting it (a tampered body still fails later).
    """
    head = bytes(head)
    return (
        len(head) >= HEADER_BYTES
        and head[:1] in _FORMATS
        and key_id_of(head) in configured_key_ids()
    )


def configured_key_ids() -> list[bytes]:
    """The ids of the configured keys, newest first."""
    return [key.key_id for key in _keyring()]


def _digest(hash_key: bytes, value: str) -> str:
    # hmac.digest is the one-shot C path: a load hashes four values a line.
    return hmac.digest(hash_key, value.encode(), "sha256")[: DIGEST_HEX_CHARS // 2].hex()


def digest(value: str) -> str:
    """The lookup hash stored beside a secret, under the newest key."""
    return _digest(_keyring()[0].hash_key, value)


def digester() -> Callable[[str | None], str | None]:
    """`digest` as one function for many values (None stays None): the newest key looked up once."""
    hash_key = _keyring()[0].hash_key
    hmac_digest = hmac.digest
    size = DIGEST_HEX_CHARS // 2

    def digest_one(value: str | None) -> str | None:
        return hmac_digest(hash_key, value.encode(), "sha256")[:size].hex() if value else None

    return digest_one


def digests_all_keys(value: str) -> list[str]:
    """The value's hash under every configured key: rows not yet rotated still match."""
    return [_digest(key.hash_key, value) for key in _keyring()]


def identity_value(*, email: str | None, account_id: str | None) -> str | None:
    """An account is one login on one workspace; without an email it has no identity to compare."""
    if not email:
        return None
    return f"{email.strip().lower()}\x1f{(account_id or '').strip().lower()}"
