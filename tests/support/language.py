"""Rendering translated messages in a known language."""

import os
from contextlib import contextmanager


@contextmanager
def english():
    """Render lazy messages in English, with or without the project's settings."""
    from django.conf import settings
    from django.utils import translation

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        settings.configure(USE_I18N=False)
    with translation.override("en"):
        yield
