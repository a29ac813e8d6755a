from rest_framework.pagination import CursorPagination


class IdCursorPagination(CursorPagination):
    """Newest first; a cursor, not page numbers, so no list ever counts its table."""

    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 1000
