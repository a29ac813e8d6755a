from pathlib import Path

from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection

from accounts import crypto


@register()
def pool_key_check(app_configs, **kwargs):
    """Refuse to start without a usable POOL_ENCRYPTION_KEY rather than fail at the first token."""
    try:
        crypto.check_keys()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="accounts.E001")]
    return []


@register()
def pool_key_census_check(app_configs, **kwargs):
    """Warn about key ids found in the database but not configured, with their row counts.

    A warning, never an error: a process must not refuse to run because some rows cannot be
    opened (they are held for staff, the rest flow). Skipped when there is no database yet.
    """
    from accounts.selectors import account_key_census, account_key_warnings

    if connection.vendor == "sqlite":
        name = str(connection.settings_dict["NAME"])
        if not name.startswith("file:") and name != ":memory:" and not Path(name).exists():
            return []  # connecting would create an empty database file
    try:
        crypto.check_keys()
        census = account_key_census()
    except (ImproperlyConfigured, DatabaseError):
        return []  # no key (E001 says so), no database or no tables yet (before migrate)
    return [Warning(message, id="accounts.W001") for message in account_key_warnings(census=census)]
