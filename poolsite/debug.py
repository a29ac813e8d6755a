"""The error page and error reports: never a token or a secret setting, even with DEBUG=1."""

import re

from django.views.debug import SafeExceptionReporterFilter

from poolsite.text import redact


class SecretSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, also active with DEBUG=1 (the default filter cleans nothing then), hiding
    the settings and environment variables that carry secrets, and redacting token-shaped text and
    secret settings from every local variable a traceback shows."""

    hidden_settings = re.compile(
        r"API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|NOTIFY_URLS|DATABASE_URL|DATABASES",
        flags=re.I,
    )

    def is_active(self, request):
        return True

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        return redact(cleansed) if type(cleansed) is str else cleansed

    def get_traceback_frame_variables(self, request, tb_frame):
        variables = []
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            if value != self.cleansed_substitute:
                try:
                    shown = repr(value)
                except Exception:  # a broken __repr__ is Django's to report, as it does
                    shown = None
                if shown is not None and redact(shown) != shown:
                    value = redact(shown)
            variables.append((name, value))
        return variables
