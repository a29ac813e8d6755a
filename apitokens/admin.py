"""API tokens in the admin: each user sees, makes and revokes only their own (superusers anyone's);
a key is shown once, on the page that follows its creation, and never stored (knox keeps a hash)."""

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _
from knox.admin import AuthTokenCreateForm
from knox.models import AuthToken

from apitokens.models import ApiToken

admin.site.unregister(AuthToken)  # knox's own lists digests and lets anyone pick any user


class ApiTokenCreateForm(AuthTokenCreateForm):
    """knox's creation form (it makes the key and keeps only its hash), with the users offered
    limited to those the requesting user may make a token for."""

    class Meta(AuthTokenCreateForm.Meta):
        model = ApiToken
        help_texts = {"expiry": _("Leave empty for a token that does not expire.")}

    def __init__(self, *args, request_user=None, **kwargs):
        super().__init__(*args, **kwargs)
        users = get_user_model().objects.filter(is_active=True)
        if not request_user.is_superuser:
            users = users.filter(pk=request_user.pk)
        self.fields["user"] = forms.ModelChoiceField(
            queryset=users, initial=request_user.pk, label=_("user"), empty_label=None
        )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("__str__", "user", "created", "expiry")
    list_select_related = ("user",)
    search_fields = ("user__username",)
    fields = ("user", "created", "expiry")
    readonly_fields = ("user", "created", "expiry")
    ordering = ("-created",)

    def get_queryset(self, request):
        tokens = super().get_queryset(request)
        return tokens if request.user.is_superuser else tokens.filter(user=request.user)

    def has_change_permission(self, request, obj=None):
        return False  # a token is made, viewed and revoked, never edited

    def get_fields(self, request, obj=None):
        return ("user", "expiry") if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None:
            return super().get_form(request, obj, **kwargs)
        form = super().get_form(
            request, obj, **{**kwargs, "form": ApiTokenCreateForm, "fields": ("user", "expiry")}
        )

        class ForThisUser(form):
            def __init__(self, *args, **form_kwargs):
                super().__init__(*args, request_user=request.user, **form_kwargs)

        return ForThisUser

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        obj.shown_once = form.token  # for response_add only; never stored

    def response_add(self, request, obj, post_url_continue=None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("API token created"),
            "token": obj,
            "key": obj.shown_once,
        }
        response = TemplateResponse(request, "admin/apitokens/token_created.html", context)
        response["Cache-Control"] = "no-store"
        return response
