"""knox's token authentication, refusing (401) rather than failing (500) on a header that is not
UTF-8: knox decodes the key as UTF-8, and a Latin-1 header byte would raise UnicodeDecodeError."""

from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import exceptions

MSG_INVALID = _("Invalid token.")


class TokenAuthentication(KnoxTokenAuthentication):
    def authenticate_credentials(self, token):
        try:
            token.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(MSG_INVALID) from None
        return super().authenticate_credentials(token)


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI schema's description of it: knox's (`Authorization: Token <key>`)."""

    target_class = TokenAuthentication
