"""Row locking and the admin log, shared by the pool's services."""

from __future__ import annotations

from django.contrib.admin.models import CHANGE, LogEntry
from django.db import connection
from django.db.models import QuerySet


def rows_locked(queryset: QuerySet) -> QuerySet:
    """`queryset` locked for update, in id order.

    One fixed order (as Saleor allocates stock) means two transactions locking overlapping rows
    queue behind each other instead of deadlocking. SQLite has no row locks (select_for_update
    does nothing there); its IMMEDIATE transactions already hold the database's one write lock
    from BEGIN, so the rows cannot change under us either.
    """
    queryset = queryset.order_by("pk")
    return queryset.select_for_update() if connection.features.has_select_for_update else queryset


def rows_update_locked(queryset: QuerySet, *, values: tuple[str, ...] = (), **changes) -> list:
    """Lock the rows `queryset` matches, then change exactly those with one conditional UPDATE
    that re-checks `queryset`'s filter, and check the row count. Returns the rows as read under
    the lock (model instances, or tuples of `values` with "pk" first). Call it inside the
    transaction that also writes the history rows."""
    locked = rows_locked(queryset)
    targets = list(locked.values_list(*values) if values else locked)
    pks = [row[0] if values else row.pk for row in targets]
    changed = queryset.filter(pk__in=pks).update(**changes) if pks else 0
    if changed != len(targets):  # pragma: no cover - the lock above makes this impossible
        raise RuntimeError("Rows changed while locked.")
    return targets


def admin_log(*, by, objects, message: str) -> None:
    """One admin-log row per object changed by staff member `by` (nothing without one)."""
    if by is not None and objects:
        LogEntry.objects.log_actions(
            user_id=by.pk, queryset=objects, action_flag=CHANGE, change_message=message
        )
