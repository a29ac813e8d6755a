"""Searching by email: how a typed term is read, and the prefix match every list and API uses."""

from django.db import connection
from django.db.models import Q


def search_term(raw: str | None) -> str:
    """A typed search term as it is matched: trimmed and lower-case (emails are stored lower-case)."""
    return (raw or "").strip().lower()


def email_prefix_q(*, term: str, field: str = "email") -> Q:
    """Accounts whose (lower-case) email starts with `term`, as an index range scan on both databases.

    PostgreSQL's LIKE 'x%' uses the varchar_pattern_ops index Django adds for an indexed CharField;
    SQLite's LIKE ignores case and so cannot use an index at all, but emails are stored lower-case,
    so a range on the binary-collated column finds the same rows from the index.
    """
    term = search_term(term)
    if connection.vendor == "sqlite":
        return Q(**{f"{field}__gte": term, f"{field}__lt": term + "\U0010ffff"})
    return Q(**{f"{field}__startswith": term})
