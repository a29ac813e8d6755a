from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext_lazy as _

from poolsite.admin_base import ReadOnlyAdmin
from webhooks import services
from webhooks.models import ImportAttempt, ReplenishmentPolicy, ReplenishmentRun, RunTrigger, WebhookEvent


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "received_at", "status", "current_seats", "threshold", "key_ok", "run", "refusal")
    list_filter = ("status", "key_ok")
    date_hierarchy = "received_at"
    list_select_related = ("run",)


@admin.register(ReplenishmentRun)
class ReplenishmentRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id", "trigger", "status", "created_at", "need", "reserved", "consumed", "rejected", "unknown",
        "returned", "duration", "error",
    )  # fmt: skip
    list_filter = ("status", "trigger")
    date_hierarchy = "created_at"
    exclude = ("lease_id",)

    @admin.display(description=_("duration"))
    def duration(self, obj):
        if obj.started_at and obj.finished_at:
            return f"{(obj.finished_at - obj.started_at).total_seconds():.1f} s"
        return ""

    def get_urls(self):
        return [
            path("push/", self.admin_site.admin_view(self.push_view), name="webhooks_replenishmentrun_push"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_push": self._can_push(request)}
        return super().changelist_view(request, extra_context)

    def _can_push(self, request):
        return request.user.has_perm("webhooks.push_accounts")

    def push_view(self, request):
        if not self._can_push(request):
            raise PermissionDenied
        form = PushForm(request.POST) if request.method == "POST" else PushForm()
        if request.method == "POST" and form.is_valid():
            run = services.run_wake(
                trigger=RunTrigger.MANUAL, requested_accounts=form.cleaned_data["accounts"], requested_by=request.user
            )
            if run is None:
                self.message_user(request, _("A run is already queued; try again in a moment."), messages.WARNING)
            else:
                self.message_user(request, _("Queued run #%(id)s.") % {"id": run.pk}, messages.SUCCESS)
            return redirect("admin:webhooks_replenishmentrun_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Push accounts to the manager now"),
            "form": form,
        }
        return TemplateResponse(request, "admin/webhooks/replenishmentrun/push.html", context)


class PushForm(forms.Form):
    accounts = forms.IntegerField(label=_("How many accounts"), min_value=1, max_value=1000, initial=1)


@admin.register(ImportAttempt)
class ImportAttemptAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "account", "run", "mode", "sent", "http_status", "outcome", "duration_ms", "manager_message", "error")
    list_filter = ("outcome", "mode", "sent")
    date_hierarchy = "created_at"
    list_select_related = ("account", "run")
    search_fields = ("account__email",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        return queryset.filter(account__email__startswith=term), False


@admin.register(ReplenishmentPolicy)
class ReplenishmentPolicyAdmin(admin.ModelAdmin):
    list_display = ("__str__", "seats_per_account", "margin_seats", "max_accounts_per_event", "max_accounts_per_hour", "import_mode", "updated_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        # One row: go straight to it.
        from webhooks.selectors import policy_get

        policy = policy_get()
        return redirect("admin:webhooks_replenishmentpolicy_change", policy.pk)
