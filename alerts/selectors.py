"""Reads of the alerts: what is raised now, for the dashboard and GET /metrics."""

from __future__ import annotations

from alerts.models import AlertCondition, AlertEvent, AlertEventKind, AlertState


def alert_active_by_condition() -> dict[str, bool]:
    """Every condition, and whether it is raised now (a handful of rows)."""
    active = dict(AlertState.objects.values_list("condition", "active"))
    return {condition: bool(active.get(condition)) for condition in AlertCondition.values}


def alert_active_list() -> list[dict]:
    """The alerts raised now, each with the message it was raised with (what to do about it).

    At most one row per condition (a handful), and one query for their latest raise messages.
    """
    states = list(AlertState.objects.filter(active=True).order_by("condition"))
    if not states:
        return []
    raised = {}
    for event in AlertEvent.objects.filter(
        kind=AlertEventKind.RAISED, condition__in=[state.condition for state in states]
    ).order_by("-id")[: 10 * len(states)]:
        raised.setdefault(event.condition, event)
    return [
        {
            "condition": state.condition,
            "label": state.get_condition_display(),
            "since": state.since,
            "title": raised[state.condition].title if state.condition in raised else "",
            "title_msg": raised[state.condition].title_msg if state.condition in raised else None,
            "message": raised[state.condition].message if state.condition in raised else "",
            "message_msg": raised[state.condition].message_msg
            if state.condition in raised
            else None,
        }
        for state in states
    ]
