"""Alerts: what staff are told when the pool needs them, where it is sent, and what came of it.

The tables were created by the webhooks app, which held alerting before this app did: they keep
their names (db_table), so moving the models moved no data (migrations/0001_initial.py), and the
encrypted URLs, bound to their table and column (accounts.fields), still open.
"""

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from accounts.fields import EncryptedTextField


class AlertCondition(models.TextChoices):
    LOW_STOCK = "low_stock", _("few usable accounts left")
    SHORT_RUNWAY = "short_runway", _("pool runs out in a few days")
    CONFIG_ERROR = "config_error", _("the manager refused an import (configuration)")
    UNKNOWN_OUTCOMES = "unknown_outcomes", _("imports keep ending without an answer")
    BANNED_TEAMS = "banned_teams", _("imported Teams are being banned")


# The longest run of unknown outcomes an alert may wait for: the check reads that many attempts.
MAX_UNKNOWN_IN_A_ROW = 100


class AlertSettings(models.Model):
    """The one row of alert thresholds, editable in the admin and read at every evaluation."""

    stock_below = models.PositiveIntegerField(
        _("alert when usable accounts in the pool fall below"),
        default=10,
        help_text=_("Available accounts that can be imported. 0 turns this alert off."),
    )
    runway_below_days = models.PositiveIntegerField(
        _("alert when the pool lasts fewer days than"),
        default=3,
        help_text=_(
            "At the last 7 days' consumption; no consumption means no alert. 0 turns this alert off."
        ),
    )
    config_error = models.BooleanField(
        _("alert when a run stops on a configuration error"),
        default=True,
        help_text=_(
            "The manager answered 401/403, a redirect or a refused request: a wrong key or URL."
        ),
    )
    unknown_in_a_row = models.PositiveIntegerField(
        _("alert after this many unknown outcomes in a row"),
        default=3,
        validators=[MaxValueValidator(MAX_UNKNOWN_IN_A_ROW)],
        help_text=_(
            "Imports that timed out, lost the connection or got a server error. 0 turns this alert off; at most 100."
        ),
    )
    banned_in_a_day = models.PositiveIntegerField(
        _("alert when this many imported Teams were banned in 24 hours"),
        default=3,
        help_text=_("As the manager reports them to the follow-up rounds. 0 turns this alert off."),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        db_table = "webhooks_alertsettings"
        verbose_name = _("alert settings")
        verbose_name_plural = _("alert settings")
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="alert_settings_singleton"),
            models.CheckConstraint(
                condition=Q(unknown_in_a_row__lte=MAX_UNKNOWN_IN_A_ROW),
                name="alert_settings_unknown_bounded",
            ),
        ]

    def __str__(self):
        return str(_("Alert settings"))


class NotificationTarget(models.Model):
    """Where alerts go: one apprise URL (Telegram, WeCom, DingTalk, Feishu, Bark, e-mail…).

    The URL carries a bot token or a password, so it is encrypted like the pool's tokens and only
    its masked form is ever shown; the mask is stored so lists never need the key.
    """

    label = models.CharField(_("name"), max_length=100, blank=True)
    url = EncryptedTextField(_("apprise URL"))
    masked_url = models.CharField(_("URL"), max_length=64, editable=False)
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        db_table = "webhooks_notificationtarget"
        verbose_name = _("notification destination")
        verbose_name_plural = _("notification destinations")
        ordering = ["id"]

    def __str__(self):
        return f"{self.label} ({self.masked_url})" if self.label else self.masked_url


class AlertState(models.Model):
    """Whether a condition is currently raised: it notifies when it becomes active, not again
    until it has cleared. Flipped only by conditional UPDATEs, so concurrent evaluations send once."""

    condition = models.CharField(
        _("condition"), max_length=32, choices=AlertCondition.choices, unique=True
    )
    active = models.BooleanField(_("active"), default=False)
    since = models.DateTimeField(_("active since"), null=True, blank=True)
    last_notified_at = models.DateTimeField(_("last notified"), null=True, blank=True)
    last_error = models.TextField(_("last delivery error"), blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        db_table = "webhooks_alertstate"
        verbose_name = _("alert state")
        verbose_name_plural = _("alert states")
        ordering = ["condition"]
        constraints = [
            models.CheckConstraint(
                condition=Q(condition__in=AlertCondition.values), name="alert_state_condition_valid"
            ),
            models.CheckConstraint(
                condition=Q(active=True, since__isnull=False) | Q(active=False, since__isnull=True),
                name="alert_state_active_has_since",
            ),
        ]

    def __str__(self):
        return self.get_condition_display()


class AlertEventKind(models.TextChoices):
    RAISED = "raised", _("raised")
    CLEARED = "cleared", _("cleared")
    TEST = "test", _("test notification")


class AlertDelivery(models.TextChoices):
    PENDING = "pending", _("sending")
    SENT = "sent", _("sent")
    PARTIAL = "partial", _("sent to some destinations only")
    FAILED = "failed", _("not delivered")
    NONE = "none", _("nothing to send")


class AlertEvent(models.Model):
    """The history of alerts: each raise and clear of a condition, each test, and what was sent."""

    created_at = models.DateTimeField(_("at"), auto_now_add=True)
    kind = models.CharField(_("event"), max_length=8, choices=AlertEventKind.choices)
    condition = models.CharField(
        _("condition"), max_length=32, choices=AlertCondition.choices, blank=True
    )
    title = models.CharField(_("title"), max_length=200, blank=True)
    message = models.TextField(_("message"), blank=True)
    # title, as a message code and its parameters, shown in the reader's language (poolsite.messages);
    # NULL for rows written before codes were kept, which show title as stored.
    title_msg = models.JSONField(null=True, blank=True, editable=False)
    # message, as a message code and its parameters, shown in the reader's language (poolsite.messages);
    # NULL for rows written before codes were kept, which show message as stored.
    message_msg = models.JSONField(null=True, blank=True, editable=False)
    delivery = models.CharField(_("delivery"), max_length=8, choices=AlertDelivery.choices)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    error = models.TextField(_("delivery error"), blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("requested by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        db_table = "webhooks_alertevent"
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=AlertEventKind.values), name="alert_event_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(delivery__in=AlertDelivery.values), name="alert_event_delivery_valid"
            ),
            # A test belongs to no condition; a raise or a clear to exactly one.
            models.CheckConstraint(
                condition=Q(kind=AlertEventKind.TEST, condition="")
                | (~Q(kind=AlertEventKind.TEST) & Q(condition__in=AlertCondition.values)),
                name="alert_event_condition_matches_kind",
            ),
            # Clearing sends nothing: one notification per episode.
            models.CheckConstraint(
                condition=~Q(kind=AlertEventKind.CLEARED) | Q(delivery=AlertDelivery.NONE),
                name="alert_event_cleared_sends_nothing",
            ),
        ]

    def __str__(self):
        return f"#{self.pk} {self.get_kind_display()}"
