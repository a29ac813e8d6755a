"""Who may use the API: staff, with the permission the same action needs in the admin."""

from rest_framework.permissions import BasePermission


class StaffWithPermission(BasePermission):
    """Staff who also hold `permission`: an API write needs what the same write needs in the admin."""

    permission = ""

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_staff and user.has_perm(self.permission))


def staff_with(permission: str) -> type[BasePermission]:
    return type(f"StaffWith[{permission}]", (StaffWithPermission,), {"permission": permission})


class StaffCanView(BasePermission):
    """Staff who may see these rows in the admin (view or change permission) may read them here."""

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_staff):
            return False
        opts = view.queryset.model._meta
        return user.has_perm(f"{opts.app_label}.view_{opts.model_name}") or user.has_perm(
            f"{opts.app_label}.change_{opts.model_name}"
        )
