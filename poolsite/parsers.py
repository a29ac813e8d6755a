"""The API's JSON parser: DRF's, answering 400 (never 500) to JSON that Python parses but the
service cannot hold: nesting deeper than any endpoint takes (DRF's parser hits RecursionError, a
500), and strings with a lone surrogate such as "\\ud800" (valid JSON, but no database or UTF-8
encoder takes it), named by the field that holds one.
"""

from django.utils.translation import gettext_lazy as _
from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

# No endpoint takes anything nested more than a few levels; far below Python's recursion limit.
MAX_JSON_DEPTH = 32

MSG_TOO_DEEP = _("JSON parse error - the body is nested more than %(depth)s levels deep.")
MSG_SURROGATE = _("Text with a lone surrogate (such as \\ud800) is not valid Unicode.")


def printable(text: str) -> str:
    """`text` with any lone surrogate written as an escape, so it can be shown or stored."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_problem(data, *, max_depth: int = MAX_JSON_DEPTH) -> tuple[str, str] | None:
    """("depth", path) or ("surrogate", path) for the first thing in `data` the service cannot
    hold, else None. `path` names the field, dotted ("lines.2.email"); "" is the body itself.
    Walks without recursion, so any depth Python's parser produced is safe to walk."""
    stack = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > max_depth:
            return "depth", path
        if isinstance(value, str):
            if has_surrogate(value):
                return "surrogate", path
        elif isinstance(value, dict):
            for key, item in value.items():
                name = f"{path}.{printable(key)}" if path else printable(key)
                if has_surrogate(key):
                    return "surrogate", name
                stack.append((item, name, depth + 1))
        elif isinstance(value, list):
            stack.extend(
                (item, f"{path}.{n}" if path else str(n), depth + 1) for n, item in enumerate(value)
            )
    return None


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser, with too deep a body and lone surrogates refused as 400 (see above)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(MSG_TOO_DEEP % {"depth": MAX_JSON_DEPTH}) from None
        problem = json_problem(data)
        if problem is None:
            return data
        kind, path = problem
        if kind == "depth":
            raise ParseError(MSG_TOO_DEEP % {"depth": MAX_JSON_DEPTH})
        raise ValidationError({path or "non_field_errors": [MSG_SURROGATE]})
