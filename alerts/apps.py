from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = _("Alerts")

    def ready(self):
        from alerts import (
            checks,  # noqa: F401  (registers the system check)
            metrics,  # noqa: F401  (adds the alert states to GET /metrics)
        )
