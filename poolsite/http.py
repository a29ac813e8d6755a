"""Request plumbing shared by the endpoints that take a body."""


def declared_length(request) -> int:
    """The body size a request declares (Content-Length); 0 when absent, malformed or negative.

    Django never reads past the declared length, so refusing a declared length over a limit,
    before reading, refuses every body over it without reading one byte of it.
    """
    try:
        return max(int(request.META.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0
