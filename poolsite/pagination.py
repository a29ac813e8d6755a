from rest_framework.pagination import CursorPagination


class IdCursorPagination(CursorPagination):
    """Newest first; a cursor, not page numbers, so no list ever counts its table."""

    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 1000


# The largest primary key a database column holds; a bigger id in a filter would overflow the
# driver (SQLite raises OverflowError) instead of simply matching nothing.
MAX_ID = 2**63 - 1
