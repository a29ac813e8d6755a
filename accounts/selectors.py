"""Reads from the pool."""

from __future__ import annotations

from django.db import connection
from django.db.models import Count, Q

from accounts.models import LOOKUP_HASH_FIELDS, Account, AccountBatch, AccountStatus


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
            cursor.execute(f"SELECT {column}, id FROM {table} WHERE {column} IN ({placeholders})", values)
            found.update(cursor.fetchall())
    return found


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
    rows = Account.objects.order_by().values("status", "usable").annotate(n=Count("*")).values_list("status", "usable", "n")
    for status, is_usable, n in rows:
        counts[status] += n
        if status == AccountStatus.AVAILABLE:
            usable[is_usable] += n
    return {"counts": counts, "available_usable": usable[True], "available_flagged_unusable": usable[False]}


def account_consumed_per_day(*, since, until) -> dict:
    """{date: accounts consumed that day} from the partial index on consumed_at."""
    from django.db.models.functions import TruncDate

    rows = (
        Account.objects.filter(status=AccountStatus.CONSUMED, consumed_at__gte=since, consumed_at__lt=until)
        .annotate(day=TruncDate("consumed_at"))
        .order_by()
        .values("day")
        .annotate(n=Count("*"))  # not COUNT(id): the partial index on consumed_at then suffices
    )
    return {row["day"]: row["n"] for row in rows}


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
            pk__in=list(account_ids), status=AccountStatus.RESERVED, lease_id=lease_id, lease_expires_at__gt=now
        ).values_list("pk", flat=True)
    )


def account_batches_of(*, user):
    """The batches a user may see and act on: their own uploads; every batch for a superuser."""
    batches = AccountBatch.objects.all()
    return batches if user.is_superuser else batches.filter(loaded_by_id=user.pk)
