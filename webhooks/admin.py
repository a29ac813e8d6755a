from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from poolsite.admin_base import (
    EmailSearchMixin,
    HistoryAdmin,
    OneRowAdmin,
    StoredMessagesAdmin,
    stored_message_display,
)
from poolsite.messages import message_render_field
from webhooks import exports, follow_up, services
from webhooks.client import (
    PROBE_KEY_REFUSED,
    PROBE_NOT_CONFIGURED,
    PROBE_OK,
    PROBE_UNEXPECTED,
    PROBE_UNREACHABLE,
    manager_probe,
)
from webhooks.models import (
    BatchReport,
    FollowedTeam,
    FollowUpRound,
    ImportAttempt,
    ReplenishmentPolicy,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    WebhookEvent,
)
from webhooks.selectors import policy_get

# Long texts are cut to this in lists; the detail page has them whole.
LIST_TEXT_CHARS = 80

# An export's period unless another is chosen: the last 30 days, today included.
EXPORT_DEFAULT_DAYS = 30

# Attempts listed on a run's page; the rest are one click away, in the attempts list.
RUN_ATTEMPTS_SHOWN = 200

MSG_PROBE = {
    PROBE_OK: _("reachable, key valid"),
    PROBE_KEY_REFUSED: _("key refused"),
    PROBE_UNREACHABLE: _("unreachable"),
    PROBE_NOT_CONFIGURED: _("not configured"),
}
MSG_PROBE_UNEXPECTED = _("unexpected answer (HTTP %(status)s)")
MSG_EXPORT_PERIOD_ORDER = _("The first day must not be after the last day.")
MSG_BAD_FILTERS = _("These filters cannot be applied: choose them again in the list, then export.")


@admin.register(WebhookEvent)
class WebhookEventAdmin(StoredMessagesAdmin, HistoryAdmin):
    stored_messages = {"refusal": "refusal_shown"}
    refusal_shown = stored_message_display("refusal", _("why refused"))
    list_display = (
        "id",
        "received_at",
        "status",
        "current_seats",
        "threshold",
        "key_ok",
        "run",
        "refusal_shown",
        "calls",
    )
    list_filter = ("status", "key_ok")
    date_hierarchy = "received_at"
    list_select_related = ("run",)


@admin.register(ReplenishmentRun)
class ReplenishmentRunAdmin(EmailSearchMixin, StoredMessagesAdmin, HistoryAdmin):
    # Chosen for 1366 px: reserved and returned are on each run's page, with the whole error.
    list_display = (
        "id",
        "created_at",
        "trigger",
        "status",
        "need",
        "results",
        "shortfall",
        "duration",
        "error_cut",
    )
    list_filter = ("status", "trigger")
    date_hierarchy = "created_at"
    exclude = ("lease_id",)
    search_fields = ("attempts__account__email",)
    search_help_text = _(
        "The runs that sent an account. Matches the start of its email address: type the whole address "
        "or its beginning (“ann” finds ann@example.com, not joanna@example.com)."
    )

    search_email_field = "account__email"
    stored_messages = {"need_explained": "need_explained_shown", "error": "error_shown"}
    need_explained_shown = stored_message_display("need_explained", _("how the need was computed"))
    error_shown = stored_message_display("error", _("error"))
    error_cut = stored_message_display("error", _("error"), cut=LIST_TEXT_CHARS)

    def search_filter(self, queryset, matches):
        # The runs that sent a matching account: a semi-join needs no DISTINCT.
        return queryset.filter(pk__in=ImportAttempt.objects.filter(matches).values("run_id"))

    @admin.display(description=_("duration"))
    def duration(self, obj):
        if obj.started_at and obj.finished_at:
            return f"{(obj.finished_at - obj.started_at).total_seconds():.1f} s"
        return ""

    @admin.display(description=_("consumed / rejected / unknown"))
    def results(self, obj):
        return f"{obj.consumed} / {obj.rejected} / {obj.unknown}"

    @admin.display(description=_("answers that matched no account sent"))
    def stray_answers_list(self, obj):
        if not obj.stray_answers:
            return "—"
        return format_html_join(
            mark_safe("<br>"), "{}", ((answer,) for answer in obj.stray_answers)
        )

    def get_fields(self, request, obj=None):
        """Every field of the run, in the model's order, the stray answers one a line; the lease
        only while the run is running (a finished run holds none, whatever the column says)."""
        fields = [
            name
            for name in super().get_fields(request, obj)
            if name not in ("stray_answers", "stray_answers_list")
        ]
        if obj is None or obj.status != RunStatus.RUNNING:
            fields = [name for name in fields if name != "lease_expires_at"]
        return [*fields, "stray_answers_list"]

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "stray_answers_list"]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The run and its attempts: the first RUN_ATTEMPTS_SHOWN of them, and a link to them all."""
        attempts = []
        if (
            object_id
            and str(object_id).isdigit()
            and request.user.has_perm("webhooks.view_importattempt")
        ):
            attempts = list(
                ImportAttempt.objects.filter(run_id=int(object_id))
                .select_related("account")
                .only(
                    "id",
                    "created_at",
                    "mode",
                    "sent",
                    "http_status",
                    "outcome",
                    "duration_ms",
                    "manager_message",
                    "error",
                    "error_msg",
                    "account__id",
                    "account__email",
                )
                .order_by("id")[: RUN_ATTEMPTS_SHOWN + 1]
            )
        extra_context = {
            **(extra_context or {}),
            "attempts": attempts[:RUN_ATTEMPTS_SHOWN],
            "attempts_more": len(attempts) > RUN_ATTEMPTS_SHOWN,
            "attempts_shown": RUN_ATTEMPTS_SHOWN,
            "can_view_attempts": request.user.has_perm("webhooks.view_importattempt"),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path(
                "push/",
                self.admin_site.admin_view(self.push_view),
                name="webhooks_replenishmentrun_push",
            ),
            path(
                "manager-status/",
                self.admin_site.admin_view(self.manager_status_view),
                name="webhooks_manager_status",
            ),
            *super().get_urls(),
        ]

    def manager_status_view(self, request):
        """The manager's reachability and key, as JSON: the dashboard asks after the page loaded."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        result = manager_probe()
        state, status, detail = result.state, result.http_status, result.text
        label = (
            MSG_PROBE_UNEXPECTED % {"status": status}
            if state == PROBE_UNEXPECTED
            else MSG_PROBE[state]
        )
        response = JsonResponse(
            {"state": state, "label": str(label), "http_status": status, "detail": detail},
            json_dumps_params={"ensure_ascii": False},
        )
        response["Cache-Control"] = "no-store"
        return response

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
                trigger=RunTrigger.MANUAL,
                requested_accounts=form.cleaned_data["accounts"],
                requested_by=request.user,
            )
            if run is None:
                self.message_user(request, services.MSG_PUSH_BUSY, messages.WARNING)
            else:
                self.message_user(
                    request, _("Queued run #%(id)s.") % {"id": run.pk}, messages.SUCCESS
                )
            return redirect("admin:webhooks_replenishmentrun_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Push accounts to the manager now"),
            "form": form,
        }
        return TemplateResponse(request, "admin/webhooks/replenishmentrun/push.html", context)


class PushForm(forms.Form):
    accounts = forms.IntegerField(
        label=_("How many accounts"), min_value=1, max_value=services.MAX_PUSH_ACCOUNTS, initial=1
    )


class ExportForm(forms.Form):
    ATTEMPTS = "attempts"
    CONSUMED = "consumed"

    what = forms.ChoiceField(
        label=_("Export"),
        choices=[(ATTEMPTS, _("import attempts")), (CONSUMED, _("consumed accounts"))],
        initial=ATTEMPTS,
    )
    first = forms.DateField(
        label=_("From (first day)"), widget=forms.DateInput(attrs={"type": "date"})
    )
    last = forms.DateField(
        label=_("To (last day, included)"), widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The last EXPORT_DEFAULT_DAYS days, today included, unless the staff member picks others.
        today = timezone.localdate()
        self.fields["first"].initial = today - timedelta(days=EXPORT_DEFAULT_DAYS - 1)
        self.fields["last"].initial = today

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("first") and cleaned.get("last") and cleaned["first"] > cleaned["last"]:
            raise forms.ValidationError(MSG_EXPORT_PERIOD_ORDER)
        return cleaned


@admin.register(ImportAttempt)
class ImportAttemptAdmin(EmailSearchMixin, StoredMessagesAdmin, HistoryAdmin):
    # Chosen for 1366 px: mode and "sent" are filters; the full texts are on each attempt's page.
    list_display = (
        "id",
        "created_at",
        "account",
        "run",
        "outcome",
        "http_status",
        "answer",
        "duration_ms",
    )
    list_filter = ("outcome", "mode", "sent")
    date_hierarchy = "created_at"
    list_select_related = ("account", "run")
    search_fields = ("account__email",)

    def get_queryset(self, request):
        # The list shows each account by its email: the encrypted tokens stay unread (a page would
        # otherwise decrypt three per row, and fail on a key that can no longer decrypt them).
        tokens = ("access_token", "session_token", "refresh_token")
        return super().get_queryset(request).defer(*(f"account__{name}" for name in tokens))

    search_email_field = "account__email"
    stored_messages = {"error": "error_shown"}
    error_shown = stored_message_display("error", _("error"))

    @admin.display(description=_("the manager's message or the error"))
    def answer(self, obj):
        text = obj.manager_message or message_render_field(obj, "error")
        return Truncator(text).chars(LIST_TEXT_CHARS) or "—"

    def get_urls(self):
        return [
            path(
                "export/",
                self.admin_site.admin_view(self.export_view),
                name="webhooks_importattempt_export",
            ),
            path(
                "export/filtered/",
                self.admin_site.admin_view(self.export_filtered_view),
                name="webhooks_importattempt_export_filtered",
            ),
            *super().get_urls(),
        ]

    def export_view(self, request):
        """A period's import attempts or consumed accounts, as CSV (a GET: it changes nothing)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = ExportForm(request.GET if "what" in request.GET else None)
        if form.is_valid():
            first, last = form.cleaned_data["first"], form.cleaned_data["last"]
            if form.cleaned_data["what"] == ExportForm.CONSUMED:
                if not request.user.has_perm("accounts.view_account"):
                    raise PermissionDenied
                return exports.account_consumed_export_csv(first=first, last=last)
            return exports.attempt_export_period_csv(first=first, last=last)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Export as CSV"),
            "form": form,
        }
        return TemplateResponse(request, "admin/webhooks/importattempt/export.html", context)

    def export_filtered_view(self, request):
        """The import attempts the list shows with the same filters and search, as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            self.message_user(request, MSG_BAD_FILTERS, messages.ERROR)
            return redirect("admin:webhooks_importattempt_changelist")
        queryset = changelist.get_queryset(request)
        filename = f"import-attempts_{timezone.localtime():%Y-%m-%d_%H%M}.csv"
        return exports.attempt_export_csv(queryset=queryset, filename=filename)


@admin.register(ReplenishmentPolicy)
class ReplenishmentPolicyAdmin(OneRowAdmin):
    row_get = staticmethod(policy_get)
    list_display = (
        "__str__",
        "seats_per_account",
        "margin_seats",
        "max_accounts_per_event",
        "max_accounts_per_hour",
        "import_mode",
        "updated_at",
    )


@admin.register(FollowedTeam)
class FollowedTeamAdmin(EmailSearchMixin, HistoryAdmin):
    """The Teams the manager holds for accounts this pool imported, as the last round saw them."""

    list_display = (
        "team_id",
        "account_email",
        "batch",
        "status",
        "status_since",
        "current_members",
        "max_members",
        "imported_at",
        "checked_at",
    )
    list_filter = ("status",)
    list_select_related = ("account__batch",)
    date_hierarchy = "imported_at"
    search_fields = ("account__email",)
    search_help_text = _(
        "The imported account. Matches the start of its email address: type the whole address or its "
        "beginning (“ann” finds ann@example.com, not joanna@example.com)."
    )

    def get_queryset(self, request):
        # Only plain columns of the account: no token is read, let alone decrypted.
        return (
            super()
            .get_queryset(request)
            .defer("account__access_token", "account__session_token", "account__refresh_token")
        )

    search_email_field = "account__email"

    @admin.display(description=_("account"), ordering="account__email")
    def account_email(self, obj):
        return obj.account.email

    @admin.display(description=_("batch"))
    def batch(self, obj):
        batch = obj.account.batch
        return (
            f"{batch.label} ({batch.supplier})"
            if batch and batch.supplier
            else (batch.label if batch else "")
        )

    def get_urls(self):
        return [
            path(
                "batches/",
                self.admin_site.admin_view(self.batches_view),
                name="webhooks_batch_report",
            ),
            path(
                "check/",
                self.admin_site.admin_view(self.check_view),
                name="webhooks_followedteam_check",
            ),
            *super().get_urls(),
        ]

    def batches_view(self, request):
        """Per batch and per supplier: what became of the accounts and of their Teams."""
        if not (
            self.has_view_permission(request)
            and request.user.has_perm("accounts.view_accountbatch")
        ):
            raise PermissionDenied
        newest = BatchReport.objects.order_by("-id").first()
        report = newest.data if newest else {"batches": [], "suppliers": []}
        if request.GET.get("format") == "csv":
            return exports.batch_report_csv(
                report=report, filename=f"batches_{timezone.localdate()}.csv"
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Batches and suppliers"),
            "report": report,
            "made_at": newest.created_at if newest else None,
            "can_check_teams": request.user.has_perm("webhooks.check_teams"),
            "statuses": IN_MANAGER_COLUMNS,
        }
        return TemplateResponse(request, "admin/webhooks/batch_report.html", context)

    def check_view(self, request):
        """Queue a follow-up round now (POST), for staff with the permission."""
        if request.method != "POST" or not request.user.has_perm("webhooks.check_teams"):
            raise PermissionDenied
        if follow_up.team_round_queue(requested_by=request.user) is None:
            messages.warning(request, MSG_ROUND_BUSY)
        else:
            messages.success(request, MSG_ROUND_QUEUED)
        return redirect("admin:index")


MSG_ROUND_QUEUED = _("The manager will be asked about every imported Team; the worker is on it.")
MSG_ROUND_BUSY = _("A follow-up round is already queued or running.")
IN_MANAGER_COLUMNS = [
    ("active", _("active")),
    ("full", _("full")),
    ("expired", _("expired")),
    ("error", _("error")),
    ("banned", _("banned")),
    ("gone", _("gone")),
    ("not_followed", _("not followed")),
    ("never_checked", _("never checked")),
]


@admin.register(FollowUpRound)
class FollowUpRoundAdmin(StoredMessagesAdmin, HistoryAdmin):
    stored_messages = {"error": "error_shown"}
    error_shown = stored_message_display("error", _("error"))
    list_display = (
        "id",
        "status",
        "requested_by",
        "created_at",
        "finished_at",
        "asked",
        "changed",
        "unanswered",
        "error_shown",
    )
    list_filter = ("status",)
    date_hierarchy = "created_at"
