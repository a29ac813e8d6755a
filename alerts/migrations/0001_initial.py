# The alert models, moved here from the webhooks app with their tables, which keep their names
# (db_table): this creates the models in Django's state only, and touches no table.

import accounts.fields
import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("webhooks", "0009_alerts_moved_to_their_app"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="NotificationTarget",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "label",
                            models.CharField(blank=True, max_length=100, verbose_name="name"),
                        ),
                        ("url", accounts.fields.EncryptedTextField(verbose_name="apprise URL")),
                        (
                            "masked_url",
                            models.CharField(editable=False, max_length=64, verbose_name="URL"),
                        ),
                        ("enabled", models.BooleanField(default=True, verbose_name="enabled")),
                        (
                            "created_at",
                            models.DateTimeField(auto_now_add=True, verbose_name="created at"),
                        ),
                        (
                            "updated_at",
                            models.DateTimeField(auto_now=True, verbose_name="updated at"),
                        ),
                    ],
                    options={
                        "verbose_name": "notification destination",
                        "verbose_name_plural": "notification destinations",
                        "db_table": "webhooks_notificationtarget",
                        "ordering": ["id"],
                    },
                ),
                migrations.CreateModel(
                    name="AlertSettings",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "stock_below",
                            models.PositiveIntegerField(
                                default=10,
                                help_text="Available accounts that can be imported. 0 turns this alert off.",
                                verbose_name="alert when usable accounts in the pool fall below",
                            ),
                        ),
                        (
                            "runway_below_days",
                            models.PositiveIntegerField(
                                default=3,
                                help_text="At the last 7 days' consumption; no consumption means no alert. 0 turns this alert off.",
                                verbose_name="alert when the pool lasts fewer days than",
                            ),
                        ),
                        (
                            "config_error",
                            models.BooleanField(
                                default=True,
                                help_text="The manager answered 401/403, a redirect or a refused request: a wrong key or URL.",
                                verbose_name="alert when a run stops on a configuration error",
                            ),
                        ),
                        (
                            "unknown_in_a_row",
                            models.PositiveIntegerField(
                                default=3,
                                help_text="Imports that timed out, lost the connection or got a server error. 0 turns this alert off; at most 100.",
                                validators=[django.core.validators.MaxValueValidator(100)],
                                verbose_name="alert after this many unknown outcomes in a row",
                            ),
                        ),
                        (
                            "banned_in_a_day",
                            models.PositiveIntegerField(
                                default=3,
                                help_text="As the manager reports them to the follow-up rounds. 0 turns this alert off.",
                                verbose_name="alert when this many imported Teams were banned in 24 hours",
                            ),
                        ),
                        (
                            "updated_at",
                            models.DateTimeField(auto_now=True, verbose_name="updated at"),
                        ),
                    ],
                    options={
                        "verbose_name": "alert settings",
                        "verbose_name_plural": "alert settings",
                        "db_table": "webhooks_alertsettings",
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("pk", 1)), name="alert_settings_singleton"
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("unknown_in_a_row__lte", 100)),
                                name="alert_settings_unknown_bounded",
                            ),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="AlertState",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "condition",
                            models.CharField(
                                choices=[
                                    ("low_stock", "few usable accounts left"),
                                    ("short_runway", "pool runs out in a few days"),
                                    (
                                        "config_error",
                                        "the manager refused an import (configuration)",
                                    ),
                                    ("unknown_outcomes", "imports keep ending without an answer"),
                                    ("banned_teams", "imported Teams are being banned"),
                                ],
                                max_length=32,
                                unique=True,
                                verbose_name="condition",
                            ),
                        ),
                        ("active", models.BooleanField(default=False, verbose_name="active")),
                        (
                            "since",
                            models.DateTimeField(
                                blank=True, null=True, verbose_name="active since"
                            ),
                        ),
                        (
                            "last_notified_at",
                            models.DateTimeField(
                                blank=True, null=True, verbose_name="last notified"
                            ),
                        ),
                        (
                            "last_error",
                            models.TextField(blank=True, verbose_name="last delivery error"),
                        ),
                        (
                            "updated_at",
                            models.DateTimeField(auto_now=True, verbose_name="updated at"),
                        ),
                    ],
                    options={
                        "verbose_name": "alert state",
                        "verbose_name_plural": "alert states",
                        "db_table": "webhooks_alertstate",
                        "ordering": ["condition"],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(
                                    (
                                        "condition__in",
                                        [
                                            "low_stock",
                                            "short_runway",
                                            "config_error",
                                            "unknown_outcomes",
                                            "banned_teams",
                                        ],
                                    )
                                ),
                                name="alert_state_condition_valid",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("active", True), ("since__isnull", False)),
                                    models.Q(("active", False), ("since__isnull", True)),
                                    _connector="OR",
                                ),
                                name="alert_state_active_has_since",
                            ),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="AlertEvent",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True, verbose_name="at")),
                        (
                            "kind",
                            models.CharField(
                                choices=[
                                    ("raised", "raised"),
                                    ("cleared", "cleared"),
                                    ("test", "test notification"),
                                ],
                                max_length=8,
                                verbose_name="event",
                            ),
                        ),
                        (
                            "condition",
                            models.CharField(
                                blank=True,
                                choices=[
                                    ("low_stock", "few usable accounts left"),
                                    ("short_runway", "pool runs out in a few days"),
                                    (
                                        "config_error",
                                        "the manager refused an import (configuration)",
                                    ),
                                    ("unknown_outcomes", "imports keep ending without an answer"),
                                    ("banned_teams", "imported Teams are being banned"),
                                ],
                                max_length=32,
                                verbose_name="condition",
                            ),
                        ),
                        (
                            "title",
                            models.CharField(blank=True, max_length=200, verbose_name="title"),
                        ),
                        ("message", models.TextField(blank=True, verbose_name="message")),
                        (
                            "delivery",
                            models.CharField(
                                choices=[
                                    ("pending", "sending"),
                                    ("sent", "sent"),
                                    ("partial", "sent to some destinations only"),
                                    ("failed", "not delivered"),
                                    ("none", "nothing to send"),
                                ],
                                max_length=8,
                                verbose_name="delivery",
                            ),
                        ),
                        (
                            "delivered_at",
                            models.DateTimeField(
                                blank=True, null=True, verbose_name="delivered at"
                            ),
                        ),
                        ("error", models.TextField(blank=True, verbose_name="delivery error")),
                        (
                            "requested_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                                verbose_name="requested by",
                            ),
                        ),
                    ],
                    options={
                        "verbose_name": "alert",
                        "verbose_name_plural": "alerts",
                        "db_table": "webhooks_alertevent",
                        "ordering": ["-id"],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("kind__in", ["raised", "cleared", "test"])),
                                name="alert_event_kind_valid",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    (
                                        "delivery__in",
                                        ["pending", "sent", "partial", "failed", "none"],
                                    )
                                ),
                                name="alert_event_delivery_valid",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("condition", ""), ("kind", "test")),
                                    models.Q(
                                        models.Q(("kind", "test"), _negated=True),
                                        (
                                            "condition__in",
                                            [
                                                "low_stock",
                                                "short_runway",
                                                "config_error",
                                                "unknown_outcomes",
                                                "banned_teams",
                                            ],
                                        ),
                                    ),
                                    _connector="OR",
                                ),
                                name="alert_event_condition_matches_kind",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("kind", "cleared"), _negated=True),
                                    ("delivery", "none"),
                                    _connector="OR",
                                ),
                                name="alert_event_cleared_sends_nothing",
                            ),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
