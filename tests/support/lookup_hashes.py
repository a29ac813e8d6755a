"""The pool's lookup hashes, computed here from their written definition, not by the product.

Test helpers that build accounts without the loader (tests/factories.py) store these, so a
change to the product's hashing cannot also change what the tests expect. The definition
(README, "Secrets"; accounts/crypto.py):

- the hash key is HKDF-SHA-256 (RFC 5869, no salt, info ``b"pool lookup hash v1"``, 32 bytes)
  of the newest encryption key, the first entry of ``POOL_ENCRYPTION_KEY`` (base64url, 32 bytes);
- a lookup hash is HMAC-SHA-256 of the value's UTF-8 bytes under that key, its first 16 bytes
  in lower-case hex;
- the identity is ``email`` stripped and lower-cased, the unit separator ``\\x1f``, then the
  account ID stripped and lower-cased (empty when none); no email, no identity hash;
- each token is hashed as it is; an absent token has no hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def _hkdf_sha256(key_material: bytes, info: bytes, length: int = 32) -> bytes:
    prk = hmac.new(b"\x00" * 32, key_material, hashlib.sha256).digest()  # extract, no salt
    okm, block, counter = b"", b"", 1
    while len(okm) < length:  # expand
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def hash_key(encryption_keys: str) -> bytes:
    newest = encryption_keys.split(",")[0].strip()
    raw = base64.urlsafe_b64decode(newest + "=" * (-len(newest) % 4))
    return _hkdf_sha256(raw, b"pool lookup hash v1")


def lookup_hash(value: str, *, encryption_keys: str) -> str:
    return (
        hmac.new(hash_key(encryption_keys), value.encode("utf-8"), hashlib.sha256)
        .digest()[:16]
        .hex()
    )


def account_lookup_hashes(
    *, email, account_id, access_token, session_token, refresh_token, encryption_keys: str
) -> dict[str, str | None]:
    """The four lookup hash columns of an account, as the loader stores them."""

    def h(value):
        return lookup_hash(value, encryption_keys=encryption_keys) if value else None

    identity = f"{email.strip().lower()}\x1f{(account_id or '').strip().lower()}" if email else None
    return {
        "identity_hash": h(identity),
        "access_token_hash": h(access_token),
        "session_token_hash": h(session_token),
        "refresh_token_hash": h(refresh_token),
    }
