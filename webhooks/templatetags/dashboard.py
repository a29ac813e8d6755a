"""The dashboard on the admin home: `{% load dashboard %}{% pool_dashboard %}`.

Everything is read in a fixed number of indexed queries (webhooks.selectors.dashboard_stats, the
last events, the last runs), whatever the size of the pool and of the history; the manager's
reachability is not read here at all, since the page must not wait on the manager: the page
asks the manager-status view for it after it has loaded.
"""

from django import template
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import AccountStatus, UnusableReason
from accounts.selectors import HELD_REASONS, account_key_warnings, account_unusable_by_reason
from webhooks.client import manager_configured
from webhooks.models import ReplenishmentRun, RunStatus, WebhookEvent
from webhooks.selectors import HOUR, dashboard_stats, event_refused_calls_since, team_dashboard

register = template.Library()

RECENT = 10

# A runway longer than this reads "more than a year", not "21199.5 days".
RUNWAY_MAX_DAYS = 365
MSG_RUNWAY_MORE_THAN_A_YEAR = _("more than a year")
MSG_RUNWAY_DAYS = _("%(days)s days")

# The consumption chart's geometry, in SVG user units (it scales to the width of the page).
BAR_WIDTH = 14
BAR_GAP = 4
CHART_LEFT = 34  # room for the scale
CHART_TOP = 8
CHART_HEIGHT = 100
CHART_BOTTOM = 18  # room for the first and last dates


@register.inclusion_tag("admin/webhooks/dashboard.html", takes_context=True)
def pool_dashboard(context):
    user = context["request"].user
    can_view_pool = user.has_perm("accounts.view_account")
    can_view_events = user.has_perm("webhooks.view_webhookevent")
    can_view_runs = user.has_perm("webhooks.view_replenishmentrun")
    result = {
        "can_view_pool": can_view_pool,
        "can_view_events": can_view_events,
        "can_view_runs": can_view_runs,
        "can_push": user.has_perm("webhooks.push_accounts"),
        "can_change_policy": user.has_perm("webhooks.change_replenishmentpolicy"),
        "can_view_teams": user.has_perm("webhooks.view_followedteam"),
        "can_check_teams": user.has_perm("webhooks.check_teams"),
        "can_view_batches": user.has_perm("webhooks.view_followedteam")
        and user.has_perm("accounts.view_accountbatch"),
    }
    if can_view_pool or can_view_runs:
        # The alerts raised now come from the alerts app's own tag, in the template.
        result["manager_configured"] = manager_configured()
    if can_view_runs:
        result["stopped_run"] = last_run_stopped_on_configuration()
    result["can_load"] = user.has_perm("accounts.add_accountbatch")
    if result["can_view_teams"]:
        result["teams"] = team_dashboard(now=timezone.now())
    if can_view_pool:
        stats = dashboard_stats(now=timezone.now())
        counts = stats["counts"]
        result.update(
            stats=stats,
            states=[(value, label, counts[value]) for value, label in AccountStatus.choices],
            chart=consumption_chart(stats["consumption_per_day"]),
            rate=stats["consumed_per_day"],
            key_warnings=account_key_warnings(cached=True),
            no_accounts=not any(counts.values()),
            **unusable_split(account_unusable_by_reason()),
        )
    if can_view_events:
        result["events"] = list(
            WebhookEvent.objects.order_by("-id").only(
                "id",
                "received_at",
                "status",
                "key_ok",
                "current_seats",
                "threshold",
                "refusal",
                "refusal_msg",
                "run_id",
            )[:RECENT]
        )
        result["refused_last_hour"] = event_refused_calls_since(since=timezone.now() - HOUR)
    if can_view_runs:
        result["runs"] = list(
            ReplenishmentRun.objects.order_by("-id").only(
                "id",
                "trigger",
                "status",
                "created_at",
                "need",
                "reserved",
                "consumed",
                "rejected",
                "unknown",
                "error",
                "error_msg",
            )[:RECENT]
        )
    return result


def unusable_split(by_reason: dict[str, int]) -> dict:
    """Available accounts that are not stock: held for staff and flagged, each with its reasons."""
    labels = dict(UnusableReason.choices)
    held = [(labels.get(r, r), n) for r, n in sorted(by_reason.items()) if r in HELD_REASONS]
    flagged = [
        (labels.get(r, r) or "—", n) for r, n in sorted(by_reason.items()) if r not in HELD_REASONS
    ]
    return {
        "held": sum(n for _, n in held),
        "held_reasons": held,
        "flagged": sum(n for _, n in flagged),
        "flagged_reasons": flagged,
    }


def last_run_stopped_on_configuration() -> ReplenishmentRun | None:
    """The last run that reached an end, when it stopped on a configuration error: it stays on the
    dashboard until a later run finishes, whatever the manager's probe says now."""
    last = (
        ReplenishmentRun.objects.filter(status__in=[RunStatus.FINISHED, RunStatus.CONFIG_ERROR])
        .order_by("-id")
        .only("id", "status", "error", "error_msg", "finished_at")
        .first()
    )
    return last if last is not None and last.status == RunStatus.CONFIG_ERROR else None


@register.filter
def runway(days) -> str:
    """A runway in days as it reads: "—" when unknown, "more than a year" past 365 days."""
    if days is None:
        return "—"
    if days > RUNWAY_MAX_DAYS:
        return str(MSG_RUNWAY_MORE_THAN_A_YEAR)
    return str(MSG_RUNWAY_DAYS % {"days": days})


def consumption_chart(days: list[dict]) -> dict:
    """Bars of accounts consumed per day, scaled to the busiest day, ready for the SVG template."""
    top = max((day["consumed"] for day in days), default=0)
    step = BAR_WIDTH + BAR_GAP
    bars = []
    for n, day in enumerate(days):
        height = round(CHART_HEIGHT * day["consumed"] / top, 1) if top else 0
        bars.append(
            {
                "day": day["day"],
                "consumed": day["consumed"],
                "x": CHART_LEFT + n * step,
                "y": CHART_TOP + CHART_HEIGHT - height,
                "height": height,
            }
        )
    baseline = CHART_TOP + CHART_HEIGHT
    return {
        "bars": bars,
        "top": top,
        "bar_width": BAR_WIDTH,
        "width": CHART_LEFT + len(days) * step,
        "height": baseline + CHART_BOTTOM,
        "top_label_y": CHART_TOP + 8,
        "baseline": baseline,
        "label_y": baseline + CHART_BOTTOM - 4,
        "scale_x": CHART_LEFT - 6,
        "last_x": CHART_LEFT + len(days) * step - BAR_GAP,
    }
