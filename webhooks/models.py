import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from accounts.models import Account


class ImportMode(models.TextChoices):
    SINGLE = "single", _("single (one request per account)")
    BATCH = "batch", _("batch (one request, NDJSON answer)")


class ReplenishmentPolicy(models.Model):
    """The one row of replenishment settings, editable in the admin and read by every run."""

    seats_per_account = models.PositiveIntegerField(_("seats per account"), default=5)
    margin_seats = models.PositiveIntegerField(_("margin (seats above the threshold)"), default=5)
    max_accounts_per_event = models.PositiveIntegerField(
        _("at most accounts per event"), default=10
    )
    max_accounts_per_hour = models.PositiveIntegerField(
        _("at most accounts per rolling hour"), default=50
    )
    import_mode = models.CharField(
        _("import mode"), max_length=8, choices=ImportMode.choices, default=ImportMode.SINGLE
    )
    retry_backoff = models.CharField(
        _("retry delays after an unknown outcome (seconds, comma-separated)"),
        max_length=200,
        default="60,300,1800",
        validators=[
            RegexValidator(
                r"^\s*\d+(\s*,\s*\d+)*\s*$", _("Whole numbers of seconds, separated by commas.")
            )
        ],
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("replenishment policy")
        verbose_name_plural = _("replenishment policy")
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="policy_singleton"),
            models.CheckConstraint(
                condition=Q(seats_per_account__gte=1), name="policy_seats_per_account_positive"
            ),
            models.CheckConstraint(
                condition=Q(import_mode__in=ImportMode.values), name="policy_import_mode_valid"
            ),
        ]

    def __str__(self):
        return str(_("Replenishment policy"))

    @property
    def backoff_seconds(self) -> list[int]:
        return [int(part) for part in self.retry_backoff.split(",") if part.strip()]


class EventStatus(models.TextChoices):
    QUEUED = "queued", _("queued")
    ACTED_ON = "acted_on", _("acted on")
    SUPERSEDED = "superseded", _("superseded")
    REFUSED = "refused", _("refused")


class WebhookEvent(models.Model):
    """One call of the low-stock webhook, accepted or refused, as it arrived."""

    received_at = models.DateTimeField(_("received at"), auto_now_add=True, db_index=True)
    status = models.CharField(_("status"), max_length=16, choices=EventStatus.choices)
    key_ok = models.BooleanField(_("API key valid"))
    current_seats = models.PositiveIntegerField(_("free seats reported"), null=True, blank=True)
    threshold = models.PositiveIntegerField(_("threshold"), null=True, blank=True)
    message = models.TextField(_("message"), blank=True)
    payload = models.TextField(_("body as received"), blank=True)
    refusal = models.CharField(_("why refused"), max_length=255, blank=True)
    # refusal, as a message code and its parameters, shown in the reader's language (poolsite.messages);
    # NULL for rows written before codes were kept, which show refusal as stored.
    refusal_msg = models.JSONField(null=True, blank=True, editable=False)
    remote_addr = models.GenericIPAddressField(_("from"), null=True, blank=True)
    # A refused call from the same address for the same reason within a minute of this row's
    # first is counted here instead of written as a row of its own (a flood cannot fill the table).
    calls = models.PositiveIntegerField(_("calls"), default=1)
    # Received while a run was in flight: its count does not yet show what that run imports, so
    # the follow-up run credits the accounts confirmed since (and asks for no minimum of one).
    during_run = models.BooleanField(_("received during a run"), default=False)
    run = models.ForeignKey(
        "ReplenishmentRun",
        verbose_name=_("run"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
    )

    class Meta:
        verbose_name = _("webhook event")
        verbose_name_plural = _("webhook events")
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=EventStatus.values), name="event_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(status=EventStatus.REFUSED)
                | Q(key_ok=True, current_seats__isnull=False, threshold__isnull=False),
                name="event_accepted_is_complete",
            ),
            models.CheckConstraint(condition=Q(calls__gte=1), name="event_calls_positive"),
        ]
        indexes = [
            # A run takes the newest pending event and supersedes the rest: a small partial index.
            models.Index(
                fields=["id"], condition=Q(status=EventStatus.QUEUED), name="event_pending_idx"
            ),
            models.Index(fields=["status", "id"], name="event_status_idx"),
            # Folding a refused call into its address's row of the last minute.
            models.Index(
                fields=["remote_addr", "received_at"],
                condition=Q(status=EventStatus.REFUSED),
                name="event_refused_idx",
            ),
        ]

    def __str__(self):
        return f"#{self.pk} {self.get_status_display()}"


class RunTrigger(models.TextChoices):
    WEBHOOK = "webhook", _("webhook")
    MANUAL = "manual", _("manual push")
    RETRY = "retry", _("retry of unknown outcomes")
    FOLLOW_UP = "follow_up", _("follow-up of events received during a run")


class Shortfall(models.TextChoices):
    """Why a run delivered fewer accounts than its event asked for (kept as a code, shown translated)."""

    EVENT_CAP = "event_cap", _("capped per event")
    HOURLY_CAP = "hourly_cap", _("hourly cap reached")
    POOL_EMPTY = "pool_empty", _("no usable account left in the pool")
    REJECTIONS = "rejections", _("too many accounts rejected in one run")
    CONFIG_ERROR = "config_error", _("stopped on a configuration error")
    LEASE_LOST = "lease_lost", _("the run lost its lease (its worker was paused or killed)")
    FAILED = "failed", _("the run failed")


class RunStatus(models.TextChoices):
    QUEUED = "queued", _("queued")
    RUNNING = "running", _("running")
    FINISHED = "finished", _("finished")
    CONFIG_ERROR = "config_error", _("stopped: configuration error")
    FAILED = "failed", _("failed")
    ABANDONED = "abandoned", _("abandoned (worker died)")


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class ReplenishmentRun(models.Model):
    """One pass of replenishment: what it was asked, what it reserved and how each import ended.

    At most one run is queued and at most one is running (database constraints): the queued one
    is the wake-up call, the running one holds the single flight. A running run holds a lease
    that it renews while it works; a run whose lease ran out died with its worker.
    """

    trigger = models.CharField(_("trigger"), max_length=16, choices=RunTrigger.choices)
    status = models.CharField(
        _("status"), max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED
    )
    requested_accounts = models.PositiveIntegerField(
        _("accounts requested (manual)"), null=True, blank=True
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("requested by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires"), null=True, blank=True)
    # The lease the run's accounts are reserved under, to trace a recovered account to its run.
    lease_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    need = models.PositiveIntegerField(_("accounts needed"), null=True, blank=True)
    need_explained = models.CharField(_("how the need was computed"), max_length=255, blank=True)
    # need_explained, as a message code and its parameters, shown in the reader's language (poolsite.messages);
    # NULL for rows written before codes were kept, which show need_explained as stored.
    need_explained_msg = models.JSONField(null=True, blank=True, editable=False)
    reserved = models.PositiveIntegerField(_("accounts reserved"), default=0)
    consumed = models.PositiveIntegerField(_("consumed"), default=0)
    rejected = models.PositiveIntegerField(_("rejected"), default=0)
    unknown = models.PositiveIntegerField(_("unknown outcome"), default=0)
    returned = models.PositiveIntegerField(_("returned unsent"), default=0)
    # Demand the run did not meet, and why: accounts the event asked for (before the caps) minus
    # those that landed or may have landed (consumed or unknown). 0 when met.
    shortfall = models.PositiveIntegerField(_("accounts short"), default=0)
    shortfall_reason = models.CharField(
        _("why short"), max_length=16, choices=Shortfall.choices, blank=True
    )
    # Answers in a batch stream that matched no account this run sent: kept, never credited.
    stray_answers = models.JSONField(
        _("answers that matched no account sent"), default=list, blank=True
    )
    error = models.TextField(_("error"), blank=True)
    # error, as a message code and its parameters, shown in the reader's language (poolsite.messages);
    # NULL for rows written before codes were kept, which show error as stored.
    error_msg = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("replenishment run")
        verbose_name_plural = _("replenishment runs")
        ordering = ["-id"]
        permissions = [("push_accounts", _("Can push accounts to the manager now"))]
        constraints = [
            models.CheckConstraint(
                condition=Q(trigger__in=RunTrigger.values), name="run_trigger_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="run_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(shortfall_reason__in=["", *Shortfall.values]),
                name="run_shortfall_reason_valid",
            ),
            models.CheckConstraint(
                condition=Q(shortfall=0) | ~Q(shortfall_reason=""), name="run_shortfall_has_reason"
            ),
            models.UniqueConstraint(
                fields=["status"], condition=Q(status=RunStatus.QUEUED), name="run_one_queued"
            ),
            models.UniqueConstraint(
                fields=["status"], condition=Q(status=RunStatus.RUNNING), name="run_one_running"
            ),
            models.CheckConstraint(
                condition=~Q(status=RunStatus.RUNNING)
                | Q(lease_expires_at__isnull=False, started_at__isnull=False),
                name="run_running_has_lease",
            ),
        ]
        indexes = [models.Index(fields=["status", "id"], name="run_status_idx")]

    def __str__(self):
        return f"#{self.pk} {self.get_trigger_display()} · {self.get_status_display()}"


class AttemptOutcome(models.TextChoices):
    CONSUMED = "consumed", _("consumed")
    REJECTED = "rejected", _("rejected")
    UNKNOWN = "unknown", _("unknown")
    CONFIG_ERROR = "config_error", _("configuration error")


class ImportAttempt(models.Model):
    """One account sent (or deliberately not sent) to the manager, and what came of it.

    Secret-free: the manager's text is redacted of anything token-shaped before it is stored.
    """

    account = models.ForeignKey(
        Account, verbose_name=_("account"), on_delete=models.PROTECT, related_name="import_attempts"
    )
    run = models.ForeignKey(
        ReplenishmentRun,
        verbose_name=_("run"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="attempts",
    )
    created_at = models.DateTimeField(_("at"), auto_now_add=True, db_index=True)
    mode = models.CharField(_("mode"), max_length=8, choices=ImportMode.choices, blank=True)
    sent = models.BooleanField(_("sent to the manager"), default=True)
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    manager_message = models.TextField(_("manager's message"), blank=True)
    error = models.TextField(_("error"), blank=True)
    # error, as a message code and its parameters, shown in the reader's language (poolsite.messages);
    # NULL for rows written before codes were kept, which show error as stored.
    error_msg = models.JSONField(null=True, blank=True, editable=False)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), null=True, blank=True)
    outcome = models.CharField(_("outcome"), max_length=16, choices=AttemptOutcome.choices)
    team_id = models.PositiveBigIntegerField(_("manager's Team id"), null=True, blank=True)

    class Meta:
        verbose_name = _("import attempt")
        verbose_name_plural = _("import attempts")
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(outcome__in=AttemptOutcome.values), name="attempt_outcome_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["account", "outcome"], name="attempt_account_outcome_idx"),
            models.Index(fields=["outcome", "created_at"], name="attempt_outcome_time_idx"),
        ]

    def __str__(self):
        return f"#{self.pk} {self.get_outcome_display()}"


# --- After the hand-off: the Teams the manager holds for accounts this pool imported ----------


class TeamStatus(models.TextChoices):
    """The manager's status of a Team (docs/FOLLOW_UP.md), and "gone" for a 404."""

    ACTIVE = "active", _("active (free seats)")
    FULL = "full", _("full")
    EXPIRED = "expired", _("expired")
    ERROR = "error", _("error")
    BANNED = "banned", _("banned")
    GONE = "gone", _("gone from the manager")


# Seen this many times in a row as expired or gone, a Team is asked about no more.
FINAL_STATUSES = (TeamStatus.EXPIRED, TeamStatus.GONE)
FINAL_SIGHTINGS = 2


class FollowedTeam(models.Model):
    """A Team the manager added for an account this pool imported, and what it last said of it.

    Created in the same transaction that records the confirmed import (the answer's team_id);
    an account settled by "already present" has no id and is not followed.
    """

    account = models.OneToOneField(
        Account, verbose_name=_("account"), on_delete=models.PROTECT, related_name="followed_team"
    )
    team_id = models.PositiveBigIntegerField(_("manager's Team id"))
    imported_at = models.DateTimeField(_("imported at"))
    status = models.CharField(
        _("status in the manager"), max_length=8, choices=TeamStatus.choices, blank=True
    )
    status_since = models.DateTimeField(_("status since"), null=True, blank=True)
    current_members = models.PositiveIntegerField(_("members"), null=True, blank=True)
    max_members = models.PositiveIntegerField(_("seats"), null=True, blank=True)
    expires_at = models.DateTimeField(_("Team expires"), null=True, blank=True)
    last_sync = models.DateTimeField(_("manager's last sync"), null=True, blank=True)
    checked_at = models.DateTimeField(_("last asked"), null=True, blank=True)
    final_sightings = models.PositiveSmallIntegerField(
        _("seen expired or gone, in a row"), default=0
    )

    class Meta:
        verbose_name = _("followed Team")
        verbose_name_plural = _("followed Teams")
        ordering = ["-id"]
        permissions = [("check_teams", _("Can ask the manager about imported Teams now"))]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["", *TeamStatus.values]), name="team_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(status="") | Q(checked_at__isnull=False), name="team_status_was_asked"
            ),
        ]
        indexes = [
            models.Index(fields=["status"], name="team_status_idx"),
            # A round asks every Team not yet seen expired or gone twice, in id order.
            models.Index(
                fields=["id"],
                condition=Q(final_sightings__lt=FINAL_SIGHTINGS),
                name="team_followed_idx",
            ),
        ]

    def __str__(self):
        return f"Team {self.team_id}"


class TeamTotals(models.Model):
    """The dashboard's Team figures, kept in the same transaction as every change to a followed
    Team (created when its import is confirmed; status and members changed by a follow-up round).

    Summing them live read every followed Team: 196 ms at 700,000 on SQLite (bench-admin).
    One row (id 1). Seats may sum below zero when a Team holds more members than seats; the
    dashboard shows at least 0, as the live sum did.
    """

    followed = models.BigIntegerField(default=0)
    active_teams = models.BigIntegerField(default=0)
    active_seats = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("Team totals")
        verbose_name_plural = _("Team totals")
        constraints = [models.CheckConstraint(condition=Q(id=1), name="team_totals_one_row")]

    def __str__(self):
        return f"{self.followed} followed, {self.active_teams} active"


class TeamStatusChange(models.Model):
    """One change of a followed Team's status, so "banned 3 days after import" is known."""

    team = models.ForeignKey(
        FollowedTeam, verbose_name=_("Team"), on_delete=models.CASCADE, related_name="changes"
    )
    at = models.DateTimeField(_("seen at"), db_index=True)
    old_status = models.CharField(_("from"), max_length=8, choices=TeamStatus.choices, blank=True)
    new_status = models.CharField(_("to"), max_length=8, choices=TeamStatus.choices)

    class Meta:
        verbose_name = _("Team status change")
        verbose_name_plural = _("Team status changes")
        ordering = ["-id"]
        indexes = [models.Index(fields=["new_status", "at"], name="team_change_status_at_idx")]

    def __str__(self):
        return f"{self.team_id}: {self.old_status or '-'} → {self.new_status}"


class BatchReport(models.Model):
    """The batches page as of the end of a follow-up round (webhooks.selectors.batch_report).

    Judging every batch reads every account and every followed Team: seconds at a million
    accounts. The worker does it after each round; the page and its CSV read the newest report.
    """

    created_at = models.DateTimeField(_("made at"), auto_now_add=True, db_index=True)
    data = models.JSONField(_("report"))

    class Meta:
        verbose_name = _("batch report")
        verbose_name_plural = _("batch reports")
        ordering = ["-id"]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M}" if self.created_at else str(self.pk)


class RoundStatus(models.TextChoices):
    QUEUED = "queued", _("queued")
    RUNNING = "running", _("running")
    FINISHED = "finished", _("finished")
    CONFIG_ERROR = "config_error", _("stopped: configuration error")
    FAILED = "failed", _("failed")


class FollowUpRound(models.Model):
    """One pass of asking the manager about every followed Team (one at a time, single flight)."""

    status = models.CharField(
        _("status"), max_length=16, choices=RoundStatus.choices, default=RoundStatus.QUEUED
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("requested by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    # A worker takes the round in slices; a slice holds it this long, and one whose holder died is taken over.
    lease_expires_at = models.DateTimeField(_("lease expires"), null=True, blank=True)
    cursor = models.PositiveBigIntegerField(_("last Team asked (id)"), default=0)
    asked = models.PositiveIntegerField(_("Teams asked"), default=0)
    changed = models.PositiveIntegerField(_("status changes"), default=0)
    unanswered = models.PositiveIntegerField(_("no usable answer"), default=0)
    error = models.TextField(_("error"), blank=True)
    # error, as a message code and its parameters, shown in the reader's language (poolsite.messages);
    # NULL for rows written before codes were kept, which show error as stored.
    error_msg = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("follow-up round")
        verbose_name_plural = _("follow-up rounds")
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=RoundStatus.values), name="round_status_valid"
            ),
            models.UniqueConstraint(
                fields=["status"],
                condition=Q(status__in=[RoundStatus.QUEUED, RoundStatus.RUNNING]),
                name="round_one_active",
            ),
        ]

    def __str__(self):
        return f"#{self.pk} {self.get_status_display()}"
