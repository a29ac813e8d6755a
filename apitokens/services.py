"""API tokens: django-rest-knox stores only a hash of each key; the key exists once, when made."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from knox.models import AuthToken


def api_token_create(
    *, user: AbstractBaseUser, expires_in: timedelta | None = None
) -> tuple[AuthToken, str]:
    """A new token for `user`: its row (a hash of the key) and the key itself, to show once."""
    return AuthToken.objects.create(user=user, expiry=expires_in)
