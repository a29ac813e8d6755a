from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured

from accounts import crypto


@register()
def pool_key_check(app_configs, **kwargs):
    """Refuse to start without a usable POOL_ENCRYPTION_KEY rather than fail at the first token."""
    try:
        crypto.check_keys()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="accounts.E001")]
    return []
