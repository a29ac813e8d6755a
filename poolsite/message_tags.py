"""Stored texts in templates, in the reader's language: `{% load stored_messages %}`, then
`{{ run|stored_message:"error" }}` renders run.error from run.error_msg (poolsite.messages)."""

from django import template

from poolsite.messages import message_render_field

register = template.Library()


@register.filter
def stored_message(obj, field: str) -> str:
    if obj is None:
        return ""
    return message_render_field(obj, field)
