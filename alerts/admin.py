"""Alerts in the admin: thresholds, where notifications go (masked), states, history, and a test button."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import path
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from alerts.delivery import alert_send_test
from alerts.destinations import notification_url_mask, notification_url_problem
from alerts.evaluation import alert_settings_get
from alerts.models import AlertDelivery, AlertEvent, AlertSettings, AlertState, NotificationTarget
from poolsite.admin_base import (
    OneRowAdmin,
    ReadOnlyAdmin,
    StoredMessagesAdmin,
    stored_message_display,
)

MSG_URL_REQUIRED = _("Enter the apprise URL of this destination.")
MSG_TEST_SENT = _("Test notification sent to every destination.")
MSG_TEST_NOT_SENT = _("The test notification did not reach every destination: %(error)s")
HELP_URL_NEW = _(
    "An apprise URL, e.g. tgram://BOT_TOKEN/CHAT_ID, wecombot://KEY, dingtalk://TOKEN, "
    "feishu://TOKEN, bark://HOST/DEVICE_KEY, mailtos://USER:PASSWORD@HOST?to=ADDRESS "
    "(https://github.com/caronc/apprise/wiki). It is stored encrypted and only its scheme and last "
    "4 characters are ever shown."
)
HELP_URL = _(
    "An apprise URL, e.g. tgram://BOT_TOKEN/CHAT_ID, wecombot://KEY, dingtalk://TOKEN, "
    "feishu://TOKEN, bark://HOST/DEVICE_KEY, mailtos://USER:PASSWORD@HOST?to=ADDRESS "
    "(https://github.com/caronc/apprise/wiki). It is stored encrypted and only its scheme and last "
    "4 characters are ever shown. Leave it empty to keep the current one."
)


@admin.register(AlertSettings)
class AlertSettingsAdmin(OneRowAdmin):
    row_get = staticmethod(alert_settings_get)
    list_display = (
        "__str__",
        "stock_below",
        "runway_below_days",
        "config_error",
        "unknown_in_a_row",
        "updated_at",
    )


class UnechoedTextInput(forms.TextInput):
    """A plain text field that is never filled back in, not even after an error: the URL carries
    a bot token, which must not come back in a page."""

    def format_value(self, value):
        return None


class NotificationTargetForm(forms.ModelForm):
    # Write-only: the stored URL is never put back into the page, not even after an error.
    new_url = forms.CharField(
        label=_("apprise URL"),
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "size": 80}),
        help_text=HELP_URL,
    )

    class Meta:
        model = NotificationTarget
        fields = ("label", "enabled")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            # A new destination: a plain, required URL field; nothing to keep.
            field = self.fields["new_url"]
            field.required = True
            field.widget = UnechoedTextInput(
                attrs={"autocomplete": "off", "size": 80, "spellcheck": "false"}
            )
            field.help_text = HELP_URL_NEW
            field.error_messages["required"] = MSG_URL_REQUIRED

    def clean_new_url(self):
        url = self.cleaned_data["new_url"]
        if not url:
            if self.instance.pk is None:
                raise forms.ValidationError(MSG_URL_REQUIRED)
            return url
        problem = notification_url_problem(url=url)
        if problem:
            raise forms.ValidationError(problem)
        return url

    def save(self, commit=True):
        url = self.cleaned_data["new_url"]
        if url:
            self.instance.url = url
            self.instance.masked_url = notification_url_mask(url=url)
        return super().save(commit)


@admin.register(NotificationTarget)
class NotificationTargetAdmin(admin.ModelAdmin):
    form = NotificationTargetForm
    list_display = ("__str__", "masked_url", "enabled", "updated_at")
    list_filter = ("enabled",)
    fields = ("label", "masked_url", "new_url", "enabled")
    readonly_fields = ("masked_url",)

    def get_fields(self, request, obj=None):
        # Adding: no stored URL to show ("URL: -" above the field said nothing).
        return (
            self.fields
            if obj is not None
            else tuple(name for name in self.fields if name != "masked_url")
        )

    def get_queryset(self, request):
        # The list and the forms show the mask; the URL is decrypted only to send.
        return super().get_queryset(request).defer("url")

    def get_urls(self):
        return [
            path(
                "test/",
                self.admin_site.admin_view(self.test_view),
                name="alerts_notificationtarget_test",
            ),
            *super().get_urls(),
        ]

    def _can_test(self, request):
        return request.user.has_perm("alerts.change_notificationtarget")

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_test": self._can_test(request),
            "env_destinations": [
                notification_url_mask(url=url) for url in settings.NOTIFY_URLS if url.strip()
            ],
        }
        return super().changelist_view(request, extra_context)

    def test_view(self, request):
        if not self._can_test(request):
            raise PermissionDenied
        return require_POST(self._send_test)(request)

    def _send_test(self, request):
        event = alert_send_test(by=request.user)
        if event.delivery == AlertDelivery.SENT:
            self.message_user(request, MSG_TEST_SENT, messages.SUCCESS)
        else:
            self.message_user(request, MSG_TEST_NOT_SENT % {"error": event.error}, messages.ERROR)
        return redirect("admin:alerts_notificationtarget_changelist")


@admin.register(AlertState)
class AlertStateAdmin(ReadOnlyAdmin):
    list_display = ("condition", "active", "since", "last_notified_at", "last_error")
    list_filter = ("active",)


@admin.register(AlertEvent)
class AlertEventAdmin(StoredMessagesAdmin, ReadOnlyAdmin):
    stored_messages = {"title": "title_shown", "message": "message_shown"}
    title_shown = stored_message_display("title", _("title"))
    message_shown = stored_message_display("message", _("message"))
    list_display = (
        "id",
        "created_at",
        "kind",
        "condition",
        "delivery",
        "title_shown",
        "error",
        "requested_by",
    )
    list_filter = ("kind", "condition", "delivery")
    list_select_related = ("requested_by",)
