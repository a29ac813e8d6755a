"""The alert states on GET /metrics: a collector added to the registry webhooks.metrics serves."""

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from alerts.selectors import alert_active_by_condition
from webhooks.metrics import REGISTRY


class AlertCollector(Collector):
    """Reads the alert states each time Prometheus scrapes: one query of a handful of rows."""

    def collect(self):
        alerts = GaugeMetricFamily(
            "pool_alert_active", "1 while an alert condition is raised.", labels=["condition"]
        )
        for condition, active in alert_active_by_condition().items():
            alerts.add_metric([condition], 1 if active else 0)
        yield alerts


# Once per process: this module is imported once, by AlertsConfig.ready.
REGISTRY.register(AlertCollector())
