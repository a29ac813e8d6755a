"""Users holding exactly the permissions a test names: the one way tests make them.

tests/conftest.py wraps it in the `user_with` and `client_with` fixtures.
"""

from __future__ import annotations

import uuid

PASSWORD = "pw"


def staff_with(*perms: str, username: str | None = None, staff: bool = True):
    """A user holding exactly these permissions ("app_label.codename"); staff unless told
    otherwise, password PASSWORD, a fresh username unless one is given."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(
        username or f"user-{uuid.uuid4().hex[:8]}", password=PASSWORD, is_staff=staff
    )
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user
