from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """For history: rows are written by the services only; the admin shows them."""

    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
