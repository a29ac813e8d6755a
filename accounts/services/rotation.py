"""Key rotation: re-sealing every encrypted column under the newest key."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.apps import apps
from django.db import connection, transaction

from accounts import crypto
from accounts.fields import EncryptedTextField
from accounts.models import (
    MATERIAL_FIELDS,
    TOKEN_FIELDS,
    Account,
    lookup_hashes,
    token_hint,
)
from accounts.services._common import rows_locked

logger = logging.getLogger(__name__)


@dataclass
class RotationResult:
    key_id: str
    examined: int = 0
    rewritten: int = 0
    others_rewritten: int = 0
    # Rows no configured key opens: left as they are (see account_key_census for their key ids).
    unopenable: int = 0


@dataclass
class ResealResult:
    examined: int = 0
    rewritten: int = 0
    unopenable: int = 0


ROTATE_CHUNK = 500


def account_rotate_keys() -> RotationResult:
    """Re-seal every encrypted column of every app under the newest key and the current format
    (bound to its table and column), and re-hash the pool's lookup hashes under the newest key.

    Encrypted columns are found by field type, so the pool needs to know nothing of the apps that
    borrow its encryption (staged uploads, notification URLs…). See encrypted_rows_reseal for how
    an edit made meanwhile is never lost.
    """
    result = RotationResult(key_id=crypto.current_key_id().hex())
    for model in apps.get_models():
        if model is Account:
            done = encrypted_rows_reseal(model=Account, rehash=_account_hashes)
            result.examined, result.rewritten = done.examined, done.rewritten
        elif any(isinstance(f, EncryptedTextField) for f in model._meta.concrete_fields):
            done = encrypted_rows_reseal(model=model)
            result.others_rewritten += done.rewritten
        else:
            continue
        result.unopenable += done.unopenable
    return result


def _account_hashes(row) -> dict:
    # The hints too: a token that was unopenable when its hint was taken shows again once re-sealed.
    hints = {f"{name}_hint": token_hint(getattr(row, name)) for name in TOKEN_FIELDS}
    return {**lookup_hashes(**{f: getattr(row, f) for f in MATERIAL_FIELDS}), **hints}


def encrypted_rows_reseal(*, model, rehash=None) -> ResealResult:
    """Re-seal the encrypted columns of `model`'s rows that are not yet under the newest key in the
    current format, in id-ordered chunks, each in one transaction with its rows locked.

    The lock (SELECT … FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE transaction holds the write
    lock from BEGIN) is what keeps an edit made during the rotation: it waits for the chunk, or the
    chunk waits for it and re-reads its value. Only the encrypted columns (and `rehash(row)`'s
    columns) are written, so a run reserving or settling the same rows is not undone. Rows that
    no configured key opens are left as they are and counted. Also used by the migrations that
    bound existing ciphertexts to their columns (with their historical models).
    """
    fields = tuple(f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField))
    columns = tuple(model._meta.get_field(name).column for name in fields)
    loaded = ("pk", *fields, *(MATERIAL_FIELDS if rehash else ()))
    result = ResealResult()
    last = 0
    while True:
        with transaction.atomic():
            rows = list(
                rows_locked(model.objects.filter(pk__gt=last)).only(*dict.fromkeys(loaded))[
                    :ROTATE_CHUNK
                ]
            )
            if not rows:
                break
            last = rows[-1].pk
            stored = _raw_blobs(model, [row.pk for row in rows], columns)
            for row in rows:
                result.examined += 1
                if all(crypto.is_current(blob) for blob in stored[row.pk] if blob is not None):
                    continue
                values = {name: getattr(row, name) for name in fields}
                if any(isinstance(value, crypto.Undecryptable) for value in values.values()):
                    result.unopenable += 1
                    continue
                model.objects.filter(pk=row.pk).update(**values, **(rehash(row) if rehash else {}))
                result.rewritten += 1
    return result


def _raw_blobs(model, pks: list[int], columns: tuple[str, ...]) -> dict[int, tuple]:
    """The stored ciphertexts' headers (version and key id) of `columns`, read without decrypting."""
    table = connection.ops.quote_name(model._meta.db_table)
    pk = connection.ops.quote_name(model._meta.pk.column)
    heads = ", ".join(
        f"SUBSTR({connection.ops.quote_name(c)}, 1, {crypto.HEADER_BYTES})" for c in columns
    )
    placeholders = ", ".join(["%s"] * len(pks))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {pk}, {heads} FROM {table} WHERE {pk} IN ({placeholders})", pks)
        return {
            row[0]: tuple(None if blob is None else bytes(blob) for blob in row[1:])
            for row in cursor.fetchall()
        }


def _raw_key_ids(model, pks: list[int], fields: tuple[str, ...]) -> dict[int, set[bytes]]:
    """The key ids of the stored ciphertexts, read without decrypting."""
    return {
        pk: {crypto.key_id_of(blob) for blob in blobs if blob is not None}
        for pk, blobs in _raw_blobs(model, pks, fields).items()
    }
