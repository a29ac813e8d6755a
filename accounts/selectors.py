"""Reads from the pool."""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps
from django.core.cache import cache
from django.db import connection
from django.db.models import BinaryField, Count, Q
from django.db.models.functions import Substr
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts import crypto
from accounts.models import (
    LOOKUP_HASH_FIELDS,
    TOKEN_FIELDS,
    Account,
    AccountBatch,
    AccountStatus,
    ConsumptionDay,
    UnusableReason,
)
from accounts.tokens import interpolate


def account_existing_digests(*, digests: dict[str, list[str]]) -> dict[str, int]:
    """Map each given lookup hash that a pool account already has to that account's id.

    `digests` maps a hash column to the values to look for in it. One query per column, each a
    probe of that column's unique index; raw SQL because the loader calls this for every chunk and
    the ORM spends longer building a 1,000-value IN list than the database spends answering it.
    """
    table = connection.ops.quote_name(Account._meta.db_table)
    found: dict[str, int] = {}
    with connection.cursor() as cursor:
        for column, values in digests.items():
            if column not in LOOKUP_HASH_FIELDS:
                raise ValueError(column)
            values = list(set(values))
            if not values:
                continue
            placeholders = ", ".join(["%s"] * len(values))
            cursor.execute(
                f"SELECT {column}, id FROM {table} WHERE {column} IN ({placeholders})", values
            )
            found.update(cursor.fetchall())
    return found


# Available accounts that are not stock, by why: held for staff after something went wrong on
# the way to the manager (retry returns those it can), or flagged because their tokens cannot be
# imported (found at load, or when a run picked them).
HELD_REASONS = (
    UnusableReason.UNKNOWN_OUTCOMES,
    UnusableReason.KEY_MISSING,
    UnusableReason.UNDECRYPTABLE,
)
FLAGGED_REASONS = (
    UnusableReason.AT_EXPIRED,
    UnusableReason.AT_SHORT_LIVED,
    UnusableReason.NO_USABLE_TOKEN,
)
STOCK_USABLE, STOCK_HELD, STOCK_FLAGGED = "usable", "held", "flagged"


def account_stock_q(*, kind: str) -> Q:
    """The available accounts of one kind: usable stock, held for staff, or flagged unusable."""
    available = Q(status=AccountStatus.AVAILABLE)
    if kind == STOCK_USABLE:
        return available & Q(usable=True)
    if kind == STOCK_HELD:
        return available & Q(usable=False, unusable_reason__in=HELD_REASONS)
    if kind == STOCK_FLAGGED:
        return available & Q(usable=False) & ~Q(unusable_reason__in=HELD_REASONS)
    raise ValueError(kind)


def account_unusable_by_reason() -> dict[str, int]:
    """Available accounts flagged unusable, counted by reason (only those rows: the (status,
    usable) index finds them, however big the usable stock)."""
    rows = (
        Account.objects.filter(status=AccountStatus.AVAILABLE, usable=False)
        .order_by()
        .values("unusable_reason")
        .annotate(n=Count("*"))
        .values_list("unusable_reason", "n")
    )
    return dict(rows)


def account_counts_by_status() -> dict[str, int]:
    """Counts of every state, zeros included."""
    return account_pool_summary()["counts"]


def account_pool_summary() -> dict:
    """Counts by state, and available accounts split into usable and flagged.

    One grouped query that PostgreSQL answers from the (status, usable) index alone; COUNT(*)
    rather than COUNT(id), which would make it read the table.
    """
    counts = dict.fromkeys(AccountStatus.values, 0)
    usable = {True: 0, False: 0}
    rows = (
        Account.objects.order_by()
        .values("status", "usable")
        .annotate(n=Count("*"))
        .values_list("status", "usable", "n")
    )
    for status, is_usable, n in rows:
        counts[status] += n
        if status == AccountStatus.AVAILABLE:
            usable[is_usable] += n
    return {
        "counts": counts,
        "available_usable": usable[True],
        "available_flagged_unusable": usable[False],
    }


def account_consumed_per_day(*, since, until) -> dict:
    """{date: accounts consumed that day} for the days (in settings.TIME_ZONE) from `since` to `until`.

    Read from the per-day rollup (ConsumptionDay), at most a row a day: no grouping of accounts.
    """
    rows = ConsumptionDay.objects.filter(
        day__gte=timezone.localdate(since), day__lte=timezone.localdate(until)
    ).values_list("day", "consumed")
    return dict(rows)


def account_token_heads_load(*, accounts: list[Account]) -> list[Account]:
    """Give each of these accounts (a page) its tokens' clear ciphertext headers, in one query of
    their first bytes: what Account.token_shown needs to say "cannot be decrypted" without
    decrypting. Per page, not in the list's queryset, so that counting the list reads no token."""
    heads = {
        f"{name}_head": Substr(name, 1, crypto.HEADER_BYTES, output_field=BinaryField())
        for name in TOKEN_FIELDS
    }
    rows = (
        Account.objects.filter(pk__in=[a.pk for a in accounts])
        .annotate(**heads)
        .values("pk", *heads)
    )
    by_pk = {row.pop("pk"): row for row in rows}
    for account in accounts:
        for name, head in by_pk.get(account.pk, {}).items():
            setattr(account, name, head)
    return accounts


def email_prefix_q(*, term: str, field: str = "email") -> Q:
    """Accounts whose (lower-case) email starts with `term`, as an index range scan on both databases.

    PostgreSQL's LIKE 'x%' uses the varchar_pattern_ops index Django adds for an indexed CharField;
    SQLite's LIKE ignores case and so cannot use an index at all, but emails are stored lower-case,
    so a range on the binary-collated column finds the same rows from the index.
    """
    term = term.strip().lower()
    if connection.vendor == "sqlite":
        return Q(**{f"{field}__gte": term, f"{field}__lt": term + "\U0010ffff"})
    return Q(**{f"{field}__startswith": term})


def account_ids_leased(*, account_ids, lease_id, now) -> set[int]:
    """Those of `account_ids` still reserved under `lease_id`, with the lease not run out.

    A run checks this before it sends: a worker frozen past its lease (a VM pause, a swap storm)
    must not send accounts that reconcile has since given back and another run imported.
    """
    return set(
        Account.objects.filter(
            pk__in=list(account_ids),
            status=AccountStatus.RESERVED,
            lease_id=lease_id,
            lease_expires_at__gt=now,
        ).values_list("pk", flat=True)
    )


def account_batches_of(*, user):
    """The batches a user may see and act on: their own uploads; every batch for a superuser."""
    batches = AccountBatch.objects.all()
    return batches if user.is_superuser else batches.filter(loaded_by_id=user.pk)


@dataclass(frozen=True)
class KeyCensus:
    """How many rows of one table hold a value sealed with one key id."""

    table: str  # the model's verbose name, for people
    key_id: str  # hex; not secret (a hash prefix of the key, stored in clear in each ciphertext)
    rows: int
    configured: bool
    newest: bool


def _encrypted_models() -> list[tuple[type, tuple[str, ...]]]:
    """Every model of any app with encrypted columns, found by field type (the pool needs to know
    nothing of the apps that borrow its encryption)."""
    from accounts.fields import EncryptedTextField

    found = []
    for model in apps.get_models():
        columns = tuple(
            f.column for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)
        )
        if columns:
            found.append((model, columns))
    return found


def account_key_census() -> list[KeyCensus]:
    """Rows per key id in every table with encrypted columns, read from the ciphertexts' headers
    (nothing is decrypted).

    A row counts under the key of its first encrypted value: every writer (the loader, a requeue,
    a rotation) seals all of a row's values together. One grouped scan per table, a single
    expression per row: about 0.2 s per 300,000 accounts on PostgreSQL.
    """
    configured = crypto.configured_key_ids()
    census = []
    quote = connection.ops.quote_name
    start = len(crypto.FORMAT_VERSION) + 1
    with connection.cursor() as cursor:
        for model, columns in _encrypted_models():
            first = (
                f"COALESCE({', '.join(quote(c) for c in columns)})"
                if len(columns) > 1
                else quote(columns[0])
            )
            cursor.execute(
                f"SELECT SUBSTR({first}, {start}, {crypto.KEY_ID_BYTES}) AS k, COUNT(*) "
                f"FROM {quote(model._meta.db_table)} WHERE {first} IS NOT NULL GROUP BY 1 ORDER BY 1"
            )
            for key_id, rows in cursor.fetchall():
                key_id = bytes(key_id)
                census.append(
                    KeyCensus(
                        table=str(model._meta.verbose_name_plural),
                        key_id=key_id.hex(),
                        rows=rows,
                        configured=key_id in configured,
                        newest=key_id == configured[0],
                    )
                )
    return census


MSG_KEY_NOT_CONFIGURED = _(
    "Key id %(key_id)s, which is not in POOL_ENCRYPTION_KEY, sealed rows of %(table)s: %(rows)s. "
    "They show as “cannot be decrypted”, and accounts among them are held, never sent. Add that key "
    "to POOL_ENCRYPTION_KEY (after the newest) and restart every process."
)


# The dashboard reads the census at most this often per process: it scans the pool.
KEY_CENSUS_CACHE_SECONDS = 60


def account_key_warnings(
    *, census: list[KeyCensus] | None = None, cached: bool = False
) -> list[str]:
    """One message per table and key id found in the database but not configured (check, dashboard).

    With `cached` (the dashboard) the census may be up to KEY_CENSUS_CACHE_SECONDS old.
    """
    if census is None:
        census = (
            cache.get_or_set("pool-key-census", account_key_census, KEY_CENSUS_CACHE_SECONDS)
            if cached
            else account_key_census()
        )
    return [
        str(
            interpolate(
                MSG_KEY_NOT_CONFIGURED, {"rows": c.rows, "table": c.table, "key_id": c.key_id}
            )
        )
        for c in census
        if not c.configured
    ]


def account_keys_all_missing(*, census: list[KeyCensus]) -> bool:
    """Rows exist and none is sealed with a configured key: the lost or regenerated .env case."""
    return bool(census) and not any(c.configured for c in census)
