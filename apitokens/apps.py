from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ApiTokensConfig(AppConfig):
    """API tokens (django-rest-knox): stored hashed, shown once, each user managing their own."""

    name = "apitokens"
    verbose_name = _("API tokens")
