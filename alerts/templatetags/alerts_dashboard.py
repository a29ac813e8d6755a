"""The alerts raised now, on the dashboard (templates/admin/webhooks/dashboard.html):
`{% load alerts_dashboard %}{% active_alerts as alerts %}`."""

from django import template

from alerts.selectors import alert_active_list

register = template.Library()


@register.simple_tag
def active_alerts() -> list[dict]:
    return alert_active_list()
