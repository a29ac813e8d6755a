"""Texts the service stores (a run's error, why a call was refused, an alert's body…), kept so
that each reader reads them in their own language.

A stored text is written twice: in English in its text column, which exports, the API, logs and
search read as before, and as a code with its parameters in the column beside it (a JSONField
named `<column>_msg`), from which the pages render it in the reader's language. A row written
before the code column existed (NULL there), or whose code this version no longer knows, shows
its English text as stored.

Each app defines its codes where it defines its messages, with message_define(code, template):
the template is an English msgid marked with gettext_noop, so makemessages puts it in the
catalogue, and it stays a plain English string for the code that writes it and for the tests.
A parameter may be another stored message (what message_store returned), rendered in turn;
a parameter from outside (the manager's words, an exception) goes in through message_verbatim,
which cleans it (poolsite.text.text_storable), and is shown as it came.
"""

from __future__ import annotations

from django.utils.translation import gettext

from poolsite.text import text_storable

_TEMPLATES: dict[str, str] = {}

# A stored message: the English text and what the code column holds.
Stored = tuple[str, dict]


def message_define(code: str, template: str) -> str:
    """Register `template` (an English msgid, gettext_noop'd) under `code`; returns the template.

    A code names one message for good: rows keep it, so a changed meaning needs a new code.
    """
    known = _TEMPLATES.setdefault(code, template)
    if known != template:
        raise ValueError(f"message code {code!r} is already defined as {known!r}")
    return template


def message_template(code: str) -> str | None:
    return _TEMPLATES.get(code)


def _is_stored(value) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], dict)
        and "code" in value[1]
    )


def _json_param(value):
    """A parameter as the code column keeps it: another message as its data, numbers as numbers,
    anything else as text."""
    if _is_stored(value):
        return value[1]
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        return value
    return str(value)


def _text_param(value):
    return value[0] if _is_stored(value) else value


def message_store(code: str, *args, **params) -> Stored:
    """What to store for message `code` with its parameters: (English text, code column).

    Parameters are positional (a template with one %s) or named (%(name)s), not both.
    """
    template = _TEMPLATES[code]
    if args and params:
        raise TypeError("a message takes positional or named parameters, not both")
    if args:
        text = template % tuple(_text_param(a) for a in args)
        data = {"code": code, "args": [_json_param(a) for a in args]}
    elif params:
        text = template % {k: _text_param(v) for k, v in params.items()}
        data = {"code": code, "params": {k: _json_param(v) for k, v in params.items()}}
    else:
        text, data = template, {"code": code}
    return text, data


# Two stored texts one after the other, and outside text as it came: the same in every language.
message_define("joined", "%(first)s %(second)s")
message_define("verbatim", "%s")


def message_join(first: Stored, second: Stored) -> Stored:
    return message_store("joined", first=first, second=second)


def message_verbatim(text, *, limit: int | None = None) -> Stored:
    """Outside text (an exception, the manager's words) where a message is expected, cleaned
    here as all kept outside text is (poolsite.text.text_storable), so no caller can forget."""
    return message_store("verbatim", text_storable(text, limit=limit))


def message_text(stored: Stored) -> str:
    return stored[0]


def message_data(stored: Stored) -> dict:
    return stored[1]


def _render_param(value):
    if isinstance(value, dict) and "code" in value:
        return _render(value)
    return value


def _render(data: dict) -> str | None:
    """The message in the active language, or None when it cannot be rendered."""
    template = _TEMPLATES.get(data.get("code")) if isinstance(data, dict) else None
    if template is None:
        return None
    args, params = data.get("args"), data.get("params")
    try:
        if args:
            rendered = tuple(_render_param(a) for a in args)
        elif params:
            rendered = {k: _render_param(v) for k, v in params.items()}
        else:
            return gettext(template)
        if any(value is None for value in (rendered if args else rendered.values())):
            return None  # a nested message this version does not know
        return gettext(template) % rendered
    except (KeyError, TypeError, ValueError):
        # A translation whose placeholders do not match its msgid: English, not an error page.
        try:
            return template % rendered
        except (KeyError, TypeError, ValueError):
            return None


def message_render(stored: dict | None, fallback: str) -> str:
    """A stored message in the active language; `fallback` (the stored text) for a row written
    before codes were kept, and for a code this version does not know."""
    if not stored:
        return fallback
    rendered = _render(stored)
    return fallback if rendered is None else rendered


def message_render_field(obj, field: str) -> str:
    """`obj.<field>` rendered from `obj.<field>_msg` in the active language (obj a model
    instance or a dict of values)."""
    if isinstance(obj, dict):
        return message_render(obj.get(f"{field}_msg"), obj.get(field) or "")
    return message_render(getattr(obj, f"{field}_msg", None), getattr(obj, field) or "")
