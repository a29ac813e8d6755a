"""The one door from replenishment to the alerts app (alerts/): its conditions read what a run, a
follow-up round or a reconcile pass left behind, so each of them ends by asking for an evaluation
here. Nothing else in this app imports alerts; alerts reads this app's data only through its selectors."""

from __future__ import annotations

from datetime import datetime

from alerts.evaluation import alert_evaluate


def alerts_evaluate(*, now: datetime) -> None:
    """Raise the alert conditions that became true and clear the others; never raises."""
    alert_evaluate(now=now)
