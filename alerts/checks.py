from django.conf import settings
from django.core.checks import Error, register

from alerts.destinations import notification_url_mask, notification_url_problem


@register()
def notify_urls_check(app_configs, **kwargs):
    """Refuse to start with a NOTIFY_URLS entry that could send requests inside the network: a
    scheme the product does not document, or an internal address written in the URL. Host names
    are resolved when a message is sent (a DNS hiccup at start must not stop the service)."""
    errors = []
    for n, url in enumerate(settings.NOTIFY_URLS, start=1):
        if not url.strip():
            continue
        problem = notification_url_problem(url=url, resolve=False)
        if problem:
            name = f"NOTIFY_URLS #{n} {notification_url_mask(url=url)}"
            # The id it had when alerting was part of the webhooks app: an operator may silence it
            # by that name (SILENCED_SYSTEM_CHECKS).
            errors.append(Error(f"{name}: {problem}", id="webhooks.E001"))
    return errors
