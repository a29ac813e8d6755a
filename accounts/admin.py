from datetime import datetime

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone, translation
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, ngettext_lazy

from accounts import services
from accounts.forms import AccountNotesForm, LoadAccountsForm, RequeueAccountForm
from accounts.models import (
    BATCH_RUNNING_STATUSES,
    Account,
    AccountBatch,
    AccountStatus,
    BatchStatus,
    accounts_for_list,
)
from accounts.selectors import (
    HELD_REASONS,
    STOCK_FLAGGED,
    STOCK_HELD,
    STOCK_USABLE,
    account_batches_of,
    account_counts_by_status,
    account_stock_q,
    account_token_heads_load,
)
from poolsite.admin_base import (
    CappedCountPaginator,
    EmailSearchMixin,
    ReadOnlyAdmin,
    stored_message_display,
)

MSG_NOT_RETRIED_WHICH = _("Not retried: %(accounts)s.")
MSG_AND_MORE = ngettext_lazy("and %(n)d more", "and %(n)d more", "n")
# Why retry skipped an account, by its state.
WHY_NOT_RETRIED = {
    "usable": _("usable already: nothing to retry"),
    AccountStatus.RESERVED: _("being imported right now"),
    AccountStatus.CONSUMED: _("already in the manager"),
    AccountStatus.RETIRED: _("retired"),
    "undecryptable": _("its stored tokens fail authentication: load it again"),
    "flagged": _("its tokens cannot be imported (%(reason)s): load it again with fresh tokens"),
}
SKIPPED_NAMED = 20
MSG_USABLE = _("usable")
MSG_RETIRE_CONFIRM_TITLE = _("Retire these accounts?")
MSG_PASTED_TEXT = _("Pasted text")
MSG_CANCELLED = _("The upload was cancelled and its text deleted.")
MSG_REQUEUED = _("Requeued: %(account)s is back in the pool.")
MSG_RETRIED = ngettext_lazy(
    "Put %(n)d account back in the pool.", "Put %(n)d accounts back in the pool.", "n"
)
MSG_NOT_RETRIED = ngettext_lazy(
    "%(n)d account was not retried: only rejected accounts and accounts held for staff can be.",
    "%(n)d accounts were not retried: only rejected accounts and accounts held for staff can be.",
    "n",
)
MSG_RELEASED = ngettext_lazy(
    "Released %(n)d stuck reservation; it counts as an attempt with an unknown outcome.",
    "Released %(n)d stuck reservations; each counts as an attempt with an unknown outcome.",
    "n",
)
MSG_IN_FLIGHT = ngettext_lazy(
    "%(n)d reservation was not released: its lease has not expired, so it is being imported right now.",
    "%(n)d reservations were not released: their leases have not expired, so they are being imported right now.",
    "n",
)
MSG_NOT_RESERVED = ngettext_lazy(
    "%(n)d account was not released: it is not reserved.",
    "%(n)d accounts were not released: they are not reserved.",
    "n",
)


def why_not_retried(account: Account) -> str:
    """Why retry leaves this account as it is (it is neither rejected nor held for a reason retry fixes)."""
    if account.status != AccountStatus.AVAILABLE:
        return str(WHY_NOT_RETRIED[account.status])
    if account.usable:
        return str(WHY_NOT_RETRIED["usable"])
    if account.unusable_reason in HELD_REASONS:
        return str(WHY_NOT_RETRIED["undecryptable"])
    return str(WHY_NOT_RETRIED["flagged"] % {"reason": account.get_unusable_reason_display()})


class RecentBatchFilter(admin.SimpleListFilter):
    title = _("batch")
    parameter_name = "batch"
    RECENT = 30

    def lookups(self, request, model_admin):
        # Only batches that may hold accounts: not those still read, awaiting confirmation, checked or cancelled.
        empty = (
            BatchStatus.PREVIEWING,
            BatchStatus.PENDING,
            BatchStatus.CHECKED,
            BatchStatus.CANCELLED,
        )
        return [
            (str(b.pk), str(b))
            for b in AccountBatch.objects.exclude(status__in=empty)[: self.RECENT]
        ]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return queryset.filter(batch_id=int(self.value()))
        return queryset


class StockFilter(admin.SimpleListFilter):
    """Available accounts split as the dashboard splits them: usable stock, held for staff, flagged."""

    title = _("stock")
    parameter_name = "stock"

    def lookups(self, request, model_admin):
        return [
            (STOCK_USABLE, _("usable stock (available, will be sent)")),
            (STOCK_HELD, _("held for staff (available, never sent until retried)")),
            (STOCK_FLAGGED, _("flagged at load or when picked (tokens not importable)")),
        ]

    def queryset(self, request, queryset):
        if self.value() in (STOCK_USABLE, STOCK_HELD, STOCK_FLAGGED):
            return queryset.filter(account_stock_q(kind=self.value()))
        return queryset


class AccountChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        # The page's rows only: their tokens' headers, so "cannot be decrypted" shows undecrypted.
        self.result_list = account_token_heads_load(accounts=list(self.result_list))


@admin.register(Account)
class AccountAdmin(EmailSearchMixin, admin.ModelAdmin):
    form = AccountNotesForm
    list_display = (
        "id",
        "email",
        "status",
        "availability",
        "masked_tokens",
        "at_expires_at",
        "attempts",
        "batch",
    )
    list_filter = ("status", StockFilter, "usable", RecentBatchFilter)
    list_select_related = ("batch",)
    search_fields = ("email",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    # Facet counts would count every row of the pool once per filter choice.
    show_facets = admin.ShowFacets.NEVER
    REQUEUE_ACTIONS = ("retry_selected", "release_selected")
    actions = ["retire_selected", *REQUEUE_ACTIONS]
    fieldsets = (
        (None, {"fields": ("email", "status", "usable", "unusable_reason", "batch", "notes")}),
        (
            _("Credentials"),
            {
                "fields": (
                    "masked_access_token",
                    "at_email",
                    "at_expires_at",
                    "masked_session_token",
                    "masked_refresh_token",
                    "client_id",
                    "account_id",
                )
            },
        ),
        (
            _("Imports"),
            {
                "fields": (
                    "attempts",
                    "unknown_attempts",
                    "retry_after",
                    "last_error_shown",
                    "lease_expires_at",
                    "consumed_at",
                    "created_at",
                    "updated_at",
                )
            },
        ),
    )
    readonly_fields = (
        "email",
        "status",
        "usable",
        "unusable_reason",
        "batch",
        "masked_access_token",
        "at_email",
        "at_expires_at",
        "masked_session_token",
        "masked_refresh_token",
        "client_id",
        "account_id",
        "attempts",
        "unknown_attempts",
        "retry_after",
        "last_error_shown",
        "lease_expires_at",
        "consumed_at",
        "created_at",
        "updated_at",
    )

    # The pool's own messages in the reader's language; the manager's refusal as it came.
    last_error_shown = stored_message_display("last_error", _("last error"))

    @admin.display(description=_("usable?"), ordering="usable")
    def availability(self, obj):
        """Usable, or why not: held for staff (retry may return it) or flagged (its tokens)."""
        if obj.usable:
            return MSG_USABLE
        return obj.get_unusable_reason_display() or "—"

    @admin.display(description=_("tokens"))
    def masked_tokens(self, obj):
        """The three tokens in one narrow column (masked; "—" for a missing one): the list fits 1366 px."""
        return format_html_join(
            mark_safe("<br>"),
            "{} {}",
            (
                (label, obj.token_shown(field) or "—")
                for label, field in (
                    ("AT", "access_token"),
                    ("ST", "session_token"),
                    ("RT", "refresh_token"),
                )
            ),
        )

    @admin.display(description=_("access token"))
    def masked_access_token(self, obj):
        return obj.token_shown("access_token")

    @admin.display(description=_("session token"))
    def masked_session_token(self, obj):
        return obj.token_shown("session_token")

    @admin.display(description=_("refresh token"))
    def masked_refresh_token(self, obj):
        return obj.token_shown("refresh_token")

    def get_queryset(self, request):
        # Tokens are shown by their stored hints: loading them would decrypt three per row.
        return accounts_for_list(super().get_queryset(request))

    def get_changelist(self, request, **kwargs):
        return AccountChangeList

    def get_object(self, request, object_id, from_field=None):
        account = super().get_object(request, object_id, from_field)
        return account if account is None else account_token_heads_load(accounts=[account])[0]

    def has_add_permission(self, request):
        # Accounts arrive through the load page, which shows what each line became.
        return False

    def has_delete_permission(self, request, obj=None):
        # Deleting would erase an account's history; retiring keeps it.
        return False

    def save_model(self, request, obj, form, change):
        services.account_set_notes(account=obj, notes=form.cleaned_data["notes"], by=request.user)

    def log_change(self, request, obj, message):
        # account_set_notes already wrote the log row in its own transaction.
        return None

    @admin.action(description=_("Retire selected accounts"), permissions=["change"])
    def retire_selected(self, request, queryset):
        """First a page that lists what will be retired and asks to confirm; then retire."""
        if request.POST.get("confirmed") != "yes":
            return self._retire_confirmation(request, queryset)
        retired = services.account_retire(
            account_ids=queryset.values_list("pk", flat=True), by=request.user
        )
        skipped = queryset.count() - len(retired)
        self.message_user(
            request,
            ngettext("Retired %(n)d account.", "Retired %(n)d accounts.", len(retired))
            % {"n": len(retired)},
            messages.SUCCESS,
        )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(n)d account was not retired: only available or rejected accounts can be.",
                    "%(n)d accounts were not retired: only available or rejected accounts can be.",
                    skipped,
                )
                % {"n": skipped},
                messages.WARNING,
            )

    RETIRE_LISTED = 100

    def _retire_confirmation(self, request, queryset):
        selected = queryset.select_related(None).order_by("pk").only("id", "email", "status")
        retirable = queryset.filter(status__in=services.RETIRABLE).count()
        total = queryset.count()
        context = self._context(
            request,
            title=MSG_RETIRE_CONFIRM_TITLE,
            accounts=list(selected[: self.RETIRE_LISTED]),
            # "Select all" re-applies the list's filters (kept in the form's URL), not a million ids.
            select_across=request.POST.get("select_across") == "1",
            selected_ids=request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            form_url=request.get_full_path(),
            total=total,
            retirable=retirable,
            more=max(total - self.RETIRE_LISTED, 0),
            action_checkbox_name=admin.helpers.ACTION_CHECKBOX_NAME,
        )
        return TemplateResponse(request, "admin/accounts/account/retire_confirmation.html", context)

    # --- Retry, release, requeue -----------------------------------------------------------

    def has_requeue_permission(self, request, obj=None):
        return request.user.has_perm("accounts.requeue_account")

    @admin.action(
        description=_("Retry selected accounts (rejected, or held for staff)"),
        permissions=["requeue"],
    )
    def retry_selected(self, request, queryset):
        retried = services.account_retry(
            account_ids=queryset.values_list("pk", flat=True), by=request.user
        )
        self.message_user(request, MSG_RETRIED % {"n": len(retried)}, messages.SUCCESS)
        skipped = queryset.exclude(pk__in=[account.pk for account in retried])
        count = skipped.count()
        if count:
            self.message_user(request, MSG_NOT_RETRIED % {"n": count}, messages.WARNING)
            named = list(
                skipped.select_related(None)
                .order_by("pk")
                .only("id", "email", "status", "usable", "unusable_reason")[:SKIPPED_NAMED]
            )
            which = "; ".join(
                f"{account.email or f'#{account.pk}'} ({why_not_retried(account)})"
                for account in named
            )
            if count > len(named):
                which += "; " + str(MSG_AND_MORE % {"n": count - len(named)})
            self.message_user(
                request, MSG_NOT_RETRIED_WHICH % {"accounts": which}, messages.WARNING
            )

    @admin.action(
        description=_("Release selected stuck reservations (lease expired)"),
        permissions=["requeue"],
    )
    def release_selected(self, request, queryset):
        result = services.account_release_stuck(
            account_ids=queryset.values_list("pk", flat=True), by=request.user
        )
        released, in_flight = len(result.released), len(result.in_flight)
        not_reserved = queryset.count() - released - in_flight
        if released:
            self.message_user(request, MSG_RELEASED % {"n": released}, messages.SUCCESS)
        if in_flight:
            self.message_user(request, MSG_IN_FLIGHT % {"n": in_flight}, messages.ERROR)
        if not_reserved:
            self.message_user(request, MSG_NOT_RESERVED % {"n": not_reserved}, messages.WARNING)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["can_requeue"] = (
            obj is not None
            and obj.status == AccountStatus.REJECTED
            and self.has_requeue_permission(request)
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def requeue_view(self, request, account_id):
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        account = get_object_or_404(Account, pk=account_id)
        change_url = reverse("admin:accounts_account_change", args=[account.pk])
        if account.status != AccountStatus.REJECTED:
            self.message_user(
                request,
                services.MSG_NOT_REJECTED % {"status": account.get_status_display()},
                messages.ERROR,
            )
            return redirect(change_url)
        form = RequeueAccountForm(
            request.POST if request.method == "POST" else None, account=account
        )
        if request.method == "POST" and form.is_valid():
            try:
                services.account_requeue(
                    account_id=account.pk, changes=form.changes, by=request.user
                )
            except services.RequeueRefused as refused:
                for field, message in refused.problems:
                    form.add_error(field, str(message))
            else:
                self.message_user(request, MSG_REQUEUED % {"account": account}, messages.SUCCESS)
                return redirect(change_url)
        context = self._context(
            request, title=_("Edit and requeue %(account)s") % {"account": account}
        )
        context.update(account=account, form=form, original=account, change_url=change_url)
        return TemplateResponse(request, "admin/accounts/account/requeue.html", context)

    def changelist_view(self, request, extra_context=None):
        # The admin merely hides an action the user may not run; asking for it anyway is refused.
        action = request.POST.get("action") if request.method == "POST" else None
        if action in self.REQUEUE_ACTIONS and not self.has_requeue_permission(request):
            raise PermissionDenied
        counts = account_counts_by_status()
        status_counts = [(value, label, counts[value]) for value, label in AccountStatus.choices]
        extra_context = {**(extra_context or {}), "status_counts": status_counts}
        extra_context["can_load"] = self._can_load(request)
        return super().changelist_view(request, extra_context)

    # --- Loading ---------------------------------------------------------------------------

    def get_urls(self):
        load = self.admin_site.admin_view(self.load_view)
        preview = self.admin_site.admin_view(self.load_preview_view)
        status = self.admin_site.admin_view(self.load_status_view)
        problems = self.admin_site.admin_view(self.load_problems_view)
        requeue = self.admin_site.admin_view(self.requeue_view)
        return [
            path("load/", load, name="accounts_account_load"),
            path("<int:account_id>/requeue/", requeue, name="accounts_account_requeue"),
            path("load/<int:batch_id>/", preview, name="accounts_account_load_preview"),
            path("load/<int:batch_id>/status/", status, name="accounts_account_load_status"),
            path(
                "load/<int:batch_id>/problems.csv", problems, name="accounts_account_load_problems"
            ),
            *super().get_urls(),
        ]

    def _can_load(self, request):
        return request.user.has_perm("accounts.add_accountbatch")

    def _context(self, request, **extra):
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Load accounts"),
            **extra,
        }

    def _own_batch(self, request, batch_id) -> AccountBatch:
        """The uploader's own batch (any batch for a superuser); anyone else's is a 404."""
        if not self._can_load(request):
            raise PermissionDenied
        return get_object_or_404(account_batches_of(user=request.user), pk=batch_id)

    def load_view(self, request):
        if not self._can_load(request):
            raise PermissionDenied
        form = (
            LoadAccountsForm(request.POST, request.FILES)
            if request.method == "POST"
            else LoadAccountsForm()
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            label = data["label"] or data["filename"] or f"{timezone.localtime():%Y-%m-%d %H:%M}"
            batch = services.account_batch_stage(
                content=data["content"],
                label=label,
                supplier=data["supplier"],
                filename=data["filename"],
                user=request.user,
                language=translation.get_language() or "",
            )
            return redirect("admin:accounts_account_load_preview", batch_id=batch.pk)
        context = self._context(
            request, form=form, upload_limit=filesizeformat(settings.POOL_UPLOAD_MAX_BYTES)
        )
        return TemplateResponse(request, "admin/accounts/account/load.html", context)

    def load_preview_view(self, request, batch_id):
        """The batch's page: its progress while the worker reads or saves it, then the preview
        (confirm or cancel), then the result. Every action is a POST that redirects back here."""
        batch = self._own_batch(request, batch_id)
        if request.method == "POST":
            actions = {
                "confirm": services.account_batch_confirm,
                "cancel": services.account_batch_cancel,
                "retry": services.account_batch_retry,
            }
            action = next((name for name in actions if name in request.POST), None)
            if action is not None:
                try:
                    actions[action](batch_id=batch.pk)
                except services.BatchNotPending as exc:
                    self.message_user(request, str(exc), messages.ERROR)
                else:
                    if action == "cancel":
                        self.message_user(request, MSG_CANCELLED, messages.SUCCESS)
                        return redirect("admin:accounts_account_load")
            return redirect("admin:accounts_account_load_preview", batch_id=batch.pk)
        detail = batch.detail or {}
        context = self._context(
            request,
            batch=batch,
            running=batch.status in BATCH_RUNNING_STATUSES,
            rows=[_shown_row(row) for row in detail.get("rows", [])],
            hidden_valid=detail.get("hidden_valid", 0),
            hidden_problems=detail.get("hidden_problems", 0),
            has_problem_list=batch.problem_chunks.exists(),
            status_url=reverse("admin:accounts_account_load_status", args=[batch.pk]),
            confirmed=batch.status in (BatchStatus.LOADED, BatchStatus.LOADING)
            or bool(batch.confirmed_at and batch.status == BatchStatus.FAILED),
            progress_percent=_percent(batch),
            # The title names the upload: its file, or pasted text (its label may be a time).
            upload_name=batch.filename or MSG_PASTED_TEXT,
        )
        return TemplateResponse(request, "admin/accounts/account/load_preview.html", context)

    def load_status_view(self, request, batch_id):
        """The batch's progress as JSON, polled by its page while the worker reads or saves it."""
        batch = self._own_batch(request, batch_id)
        return JsonResponse(
            {
                "id": batch.pk,
                "status": batch.status,
                "status_display": str(batch.get_status_display()),
                "running": batch.status in BATCH_RUNNING_STATUSES,
                "total_lines": batch.total_lines,
                "lines_read": batch.lines_read,
                "percent": _percent(batch),
                "created": batch.created_count,
                "duplicates": batch.duplicate_count,
                "invalid": batch.invalid_count,
                "flagged_unusable": batch.flagged_count,
                "failed": batch.failed_count,
                "error": batch.error,
            }
        )

    def load_problems_view(self, request, batch_id):
        """Every line of the batch that was not saved, or saved with a warning, as CSV (no secrets)."""
        batch = self._own_batch(request, batch_id)
        response = StreamingHttpResponse(
            services.account_batch_problem_csv(batch_id=batch.pk),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}-problems.csv"'
        return response


def _percent(batch: AccountBatch) -> int:
    if batch.status not in BATCH_RUNNING_STATUSES:
        return 100
    return min(100, batch.lines_read * 100 // batch.total_lines) if batch.total_lines else 0


def _shown_row(row: dict) -> dict:
    expires = row.get("at_expires_at")
    return {**row, "at_expires_at": datetime.fromisoformat(expires) if expires else None}


@admin.register(AccountBatch)
class AccountBatchAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "label",
        "supplier",
        "source",
        "status",
        "loaded_by",
        "created_at",
        "created_count",
        "duplicate_count",
        "invalid_count",
        "flagged_count",
    )
    list_filter = ("supplier", "source", "status")
    search_fields = ("label", "supplier")
    # The page's detail rows stay out (the batch's page shows those); the upload's text (secrets)
    # is in BatchUpload, which has no admin.
    exclude = ("detail", "worker_token")
    readonly_fields = [
        f.name for f in AccountBatch._meta.fields if f.name not in ("detail", "worker_token")
    ]
