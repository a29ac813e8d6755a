"""GET /metrics: the pool's state for Prometheus, read from the selectors at scrape time.

Off (404) unless METRICS_TOKEN is set; then the scraper must send `Authorization: Bearer <token>`
(compared in constant time). Every figure comes from grouped counts and index probes, the same
reads as the dashboard, so a scrape costs what a dashboard view costs.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from django.conf import settings
from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from accounts.selectors import HELD_REASONS, account_unusable_by_reason
from webhooks.selectors import (
    HOUR,
    attempt_counts_by_outcome_since,
    attempt_last_confirmed_at,
    dashboard_stats,
    event_refused_calls_since,
    run_counts_by_status,
)

# Import attempts are counted over this window: a range of an index, not the whole history.
ATTEMPTS_WINDOW = timedelta(hours=24)


class PoolCollector(Collector):
    """Reads the pool and the replenishment history each time Prometheus scrapes."""

    def collect(self):
        now = timezone.now()
        stats = dashboard_stats(now=now)

        accounts = GaugeMetricFamily(
            "pool_accounts", "Accounts in the pool by state.", labels=["state"]
        )
        for state, n in stats["counts"].items():
            accounts.add_metric([state], n)
        yield accounts
        yield GaugeMetricFamily(
            "pool_usable_accounts",
            "Usable stock: available accounts the next run may send.",
            value=stats["available_usable"],
        )
        unusable = GaugeMetricFamily(
            "pool_unusable_accounts",
            "Available accounts that are not stock, by kind (held for staff, flagged) and reason.",
            labels=["kind", "reason"],
        )
        for reason, n in account_unusable_by_reason().items():
            unusable.add_metric(
                ["held" if reason in HELD_REASONS else "flagged", reason or "none"], n
            )
        yield unusable
        yield GaugeMetricFamily(
            "pool_seats_in_stock",
            "Usable stock times the policy's seats per account.",
            value=stats["seats_in_stock"],
        )
        if stats["runway_days"] is not None:  # nothing consumed in 7 days: no runway, no sample
            yield GaugeMetricFamily(
                "pool_runway_days",
                "Days the usable stock lasts at the last 7 days' consumption.",
                value=stats["runway_days"],
            )
        yield GaugeMetricFamily(
            "pool_consumed_last_7_days",
            "Accounts the manager confirmed in the last 7 days.",
            value=stats["consumed_last_7_days"],
        )

        runs = GaugeMetricFamily(
            "pool_replenishment_runs", "Replenishment runs by status.", labels=["status"]
        )
        for status, n in run_counts_by_status().items():
            runs.add_metric([status], n)
        yield runs
        attempts = GaugeMetricFamily(
            "pool_import_attempts_24h",
            "Import attempts in the last 24 hours by outcome.",
            labels=["outcome"],
        )
        for outcome, n in attempt_counts_by_outcome_since(since=now - ATTEMPTS_WINDOW).items():
            attempts.add_metric([outcome], n)
        yield attempts
        yield GaugeMetricFamily(
            "pool_webhook_refused_calls_last_hour",
            "Low-stock webhook calls refused in the last hour (wrong key, bad body).",
            value=event_refused_calls_since(since=now - HOUR),
        )

        last = attempt_last_confirmed_at()
        if last is not None:
            yield GaugeMetricFamily(
                "pool_last_confirmed_import_timestamp_seconds",
                "Unix time of the last import the manager confirmed.",
                value=last.timestamp(),
            )


# The alerts app adds its own collector (alerts/metrics.py): this app does not read its states.
REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(PoolCollector())


def _authorised(request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), settings.METRICS_TOKEN.encode())


@require_GET
def metrics(request):
    if not settings.METRICS_TOKEN:
        raise Http404
    if not _authorised(request):
        response = HttpResponse(
            "Missing or wrong bearer token.\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    response = HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
