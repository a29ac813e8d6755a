from django.conf import settings
from django.core.checks import Error, register

from webhooks.client import manager_key_problem


@register()
def manager_key_check(app_configs, **kwargs):
    """Refuse at start a MANAGER_API_KEY that cannot be sent as an HTTP header."""
    problem = manager_key_problem(settings.MANAGER_API_KEY)
    return [Error(problem, id="webhooks.E002")] if problem else []
