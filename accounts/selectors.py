"""Reads from the pool."""

from __future__ import annotations

from django.db import connection
from django.db.models import Count

from accounts.models import LOOKUP_HASH_FIELDS, Account, AccountStatus


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
    """Counts of every state, zeros included. One grouped scan of the (status, id) index."""
    counts = dict.fromkeys(AccountStatus.values, 0)
    for row in Account.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def account_pool_summary() -> dict:
    available = Account.objects.filter(status=AccountStatus.AVAILABLE)
    return {
        "counts": account_counts_by_status(),
        "available_usable": available.filter(usable=True).count(),
        "available_flagged_unusable": available.filter(usable=False).count(),
    }


def account_consumed_per_day(*, since, until) -> dict:
    """{date: accounts consumed that day} from the partial index on consumed_at."""
    from django.db.models.functions import TruncDate

    rows = (
        Account.objects.filter(status=AccountStatus.CONSUMED, consumed_at__gte=since, consumed_at__lt=until)
        .annotate(day=TruncDate("consumed_at"))
        .order_by()
        .values("day")
        .annotate(n=Count("id"))
    )
    return {row["day"]: row["n"] for row in rows}
