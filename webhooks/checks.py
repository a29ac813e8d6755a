from django.conf import settings
from django.core.checks import Error, register

from alerts import evaluation as alerts
from webhooks.client import manager_key_problem


@register()
def notify_urls_check(app_configs, **kwargs):
    """Refuse to start with a NOTIFY_URLS entry that could send requests inside the network: a
    scheme the product does not document, or an internal address written in the URL. Host names
    are resolved when a message is sent (a DNS hiccup at start must not stop the service)."""
    errors = []
    for n, url in enumerate(settings.NOTIFY_URLS, start=1):
        if not url.strip():
            continue
        problem = alerts.notification_url_problem(url=url, resolve=False)
        if problem:
            name = f"NOTIFY_URLS #{n} {alerts.notification_url_mask(url=url)}"
            errors.append(Error(f"{name}: {problem}", id="webhooks.E001"))
    return errors


@register()
def manager_key_check(app_configs, **kwargs):
    """Refuse at start a MANAGER_API_KEY that cannot be sent as an HTTP header."""
    problem = manager_key_problem(settings.MANAGER_API_KEY)
    return [Error(problem, id="webhooks.E002")] if problem else []
